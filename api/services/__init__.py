"""The API's logic, one module per resource. Services raise ``api.errors`` and never HTTP."""
