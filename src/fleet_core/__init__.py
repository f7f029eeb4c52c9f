"""fleet_core: the engine of fleet console (models, database, registry, runtime, ...).

This package never imports a UI toolkit; the console and the HTTP API are views on it.
"""

__version__ = "0.1.0"
