"""Superset's metadata and admin user for marketlake, made current on every start.

Runs in Superset's own Python, locally (lakehouse/services/superset.py, .venv-superset) and in docker-compose
(the one-shot `superset-init`), with the same environment: Superset's (SUPERSET_HOME, SUPERSET_CONFIG_PATH,
SUPERSET_SECRET_KEY) and SUPERSET_ADMIN_PASSWORD.
    python superset/initialise.py
Schema upgrade and Superset's built-in roles run once per Superset version and permission revision (a stamp file
in SUPERSET_HOME remembers). At every start: marketlake's roles `analyst` and `viewer` get their permissions (data
access, which needs the database connection, is granted by provision.py), and the `admin` user is created when
missing, its password set from SUPERSET_ADMIN_PASSWORD whenever it differs, so a change takes effect at next start.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

ADMIN = "admin"
# Bump when superset_config.py adds permissions that only `superset init` creates (2: FAB's security REST API).
PERMISSIONS_REVISION = 2


def upgrade_once(home: Path) -> None:
    stamp = home / "initialised"
    current = f"{version('apache-superset')} permissions {PERMISSIONS_REVISION}"
    if stamp.exists() and stamp.read_text() == current:
        return
    cli = Path(sys.executable).with_name("superset")
    for args in (["db", "upgrade"], ["init"]):
        subprocess.run([str(cli), *args], check=True)
    stamp.write_text(current)


def role_rules(sm: Any) -> dict[str, Callable[[Any], bool]]:
    """What each marketlake role may do, in Superset's own permission families.

    analyst: Gamma (dashboards, charts, explore; read-only on databases and datasets) plus SQL Lab.
    viewer: Superset's dashboard-viewing set (what its built-in Public role would get), their own profile, and the
    CSRF token the browser needs to ask for chart data; no SQL Lab, no chart or dashboard editing.
    """
    csrf = ("can_read", "SecurityRestApi")
    return {
        "analyst": lambda pvm: sm._is_gamma_pvm(pvm) or sm._is_sql_lab_pvm(pvm),
        "viewer": lambda pvm: (
            sm._is_public_pvm(pvm) or sm._is_accessible_to_all(pvm) or (pvm.permission.name, pvm.view_menu.name) == csrf
        ),
    }


def ensure_roles(sm: Any) -> None:
    """Create or update the roles; data-access grants already on them (provision.py's) are kept."""
    pvms = sm._get_all_pvms()
    for name, allowed in role_rules(sm).items():
        role = sm.add_role(name)
        data = [pvm for pvm in role.permissions if pvm.permission.name in sm.data_access_permissions]
        role.permissions = [pvm for pvm in pvms if allowed(pvm)] + data
    sm.session.commit()


def ensure_admin(sm: Any, password: str) -> str:
    """Create the admin user or align its password; returns what was done."""
    from werkzeug.security import check_password_hash

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
    from superset.app import create_app

    upgrade_once(Path(os.environ["SUPERSET_HOME"]))
    app = create_app()
    with app.app_context():
        ensure_roles(app.appbuilder.sm)
        print(ensure_admin(app.appbuilder.sm, os.environ["SUPERSET_ADMIN_PASSWORD"]))


if __name__ == "__main__":
    main()
