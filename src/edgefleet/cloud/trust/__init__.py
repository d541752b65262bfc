"""The controller's side of the trust model, in one place.

* ``repository.Trust``: the keyring and TUF metadata (image repository and director), releases.
* ``signing``: keep each device's director metadata in step with its assignments and settings,
  many devices per transaction (``sign_devices``).
* ``director_store`` / ``director_tables``: per-device director metadata in the database (served
  at ``/tuf/director/<id>/``), versions sequenced by locked head rows so any replica may sign.
* ``freshness``: is what a device signed in step with what the director signed for it?
* ``key_status``: where each role's keys live, thresholds, expiry (``fleet keys status``).

Devices verify everything with python-tuf against the roots they were provisioned with; nothing
here is trusted by a device for any other reason.
"""
