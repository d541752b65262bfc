"""The controller's side of the trust model, in one place.

* ``repository.Trust``: the keyring and TUF metadata (image repository and director), releases.
* ``signing``: keep each device's director metadata in step with its assignments and settings.
* ``freshness``: is what a device signed in step with what the director signed for it?
* ``key_status``: where each role's keys live, thresholds, expiry (``fleet keys status``).

Devices verify everything with python-tuf against the roots they were provisioned with; nothing
here is trusted by a device for any other reason.
"""
