"""Example projects Bastion builds for demos and end-to-end tests (``bastion demo``)."""
