"""Home Assistant MQTT discovery of what edgegw knows (the ``homeassistant:`` section).

:mod:`gateway.homeassistant.config` is the config model (imported with the config);
:mod:`gateway.homeassistant.discovery` builds the discovery payloads and translates
Home Assistant's commands (pure); :mod:`gateway.homeassistant.link` publishes them and
listens on the broker. Nothing here is imported unless the section is enabled.
"""
