"""Simulated sensor fleets for tests, demos and benchmarks (never imported by the runtime).

- :mod:`simulators.fleet`: the fleet spec (YAML): device kinds with counts, profiles,
  serial devices, seed, rate, faults; ``simulators/fleets/`` has examples.
- :mod:`simulators.signals`: what each kind of sensor reports over time.
- :mod:`simulators.encoders`: samples as Zigbee2MQTT, Tasmota, JSON, plain and serial payloads.
- :mod:`simulators.generator`: the reproducible, paced message stream with fault injection.
- :mod:`simulators.mqtt_publisher` / :mod:`simulators.run`: publishing it (N processes).
- :mod:`simulators.pty_device` / :mod:`simulators.serial_fleet`: virtual serial devices.
- :mod:`simulators.testbed`: real brokers (Mosquitto, Kafka) for tests.

``edgegw simulate`` (gateway/commands/simulate.py) is the command line.
"""
