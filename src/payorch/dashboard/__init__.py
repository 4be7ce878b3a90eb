"""The web console at ``/dashboard`` (DESIGN.md section 14): server-rendered pages for merchants'
users and operators, calling the same services as ``api/``. docs/dashboard.md describes it."""
