"""The controller's side of each device: enrolment, credentials, what it sent, what it is told.

Where a device's message is applied (the MQTT bridge parses and validates, then hands over):

* ``status``    → ``ingest.apply_status`` (online/offline, hardware facts)
* ``reported``  → ``report_verify.verify_reported`` → ``ingest.apply_reported``
* ``telemetry`` → ``report_verify.verify_telemetry`` → ``ingest.apply_telemetry``
  (latest period on the device row, every period in ``telemetry_store``, class names checked by ``labels``)
* ``events``    → ``cloud.shadow_index`` (captures, clips, per-pair agreement)

What each device is told: ``fleet.desired_for`` builds its ``Desired`` from slot assignments and
``fleet_settings`` (capture and network policy); ``cloud.trust.signing`` signs its director metadata.
``identity`` issues and revokes credentials; ``presence`` decides who has gone quiet;
``history`` records what happened to one device, when.
"""
