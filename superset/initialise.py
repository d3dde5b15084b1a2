"""Superset's metadata and admin user for marketlake, made current on every start.

Runs in Superset's own Python, locally (lakehouse/services/superset.py, .venv-superset) and in docker-compose
(the one-shot `superset-init`), with the same environment: Superset's (SUPERSET_HOME, SUPERSET_CONFIG_PATH,
SUPERSET_SECRET_KEY) and SUPERSET_ADMIN_PASSWORD.
    python superset/initialise.py
Schema upgrade and roles run once per Superset version (a stamp file in SUPERSET_HOME remembers). The `admin`
user is created when missing, and its password is set from SUPERSET_ADMIN_PASSWORD whenever it differs, so a
changed password takes effect at the next start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

ADMIN = "admin"


def upgrade_once(home: Path) -> None:
    stamp = home / "initialised"
    current = version("apache-superset")
    if stamp.exists() and stamp.read_text() == current:
        return
    cli = Path(sys.executable).with_name("superset")
    for args in (["db", "upgrade"], ["init"]):
        subprocess.run([str(cli), *args], check=True)
    stamp.write_text(current)


def ensure_admin(password: str) -> str:
    """Create the admin user or align its password; returns what was done."""
    from superset.app import create_app
    from werkzeug.security import check_password_hash

    app = create_app()
    with app.app_context():
        sm = app.appbuilder.sm
        user = sm.find_user(username=ADMIN)
        if user is None:
            role = sm.find_role(sm.auth_role_admin)
            sm.add_user(ADMIN, "marketlake", "admin", "admin@localhost", role, password=password)
            return "admin created"
        if not check_password_hash(user.password, password):
            sm.reset_password(user.id, password)
            return "admin password set"
        return "admin unchanged"


def main() -> None:
    upgrade_once(Path(os.environ["SUPERSET_HOME"]))
    print(ensure_admin(os.environ["SUPERSET_ADMIN_PASSWORD"]))


if __name__ == "__main__":
    main()
