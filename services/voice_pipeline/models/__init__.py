"""The offline models: the registry (PyPI model packages, SHA-256 pinned), the installer and
`voice-pipeline models`. Imports `common` only."""
