"""SSL methods, one file each, registered by name (``METHODS``)."""

from anatssl.methods.base import METHODS, SSLMethod, build_method, register_method

# registration: one import per method file
from anatssl.methods import swinssl  # noqa: F401  isort: skip
from anatssl.methods import sam  # noqa: F401  isort: skip
from anatssl.methods import s2dc  # noqa: F401  isort: skip
from anatssl.methods import alice  # noqa: F401  isort: skip
from anatssl.methods import simmim  # noqa: F401  isort: skip
from anatssl.methods import modelsgenesis  # noqa: F401  isort: skip
from anatssl.methods import voco  # noqa: F401  isort: skip

__all__ = ["METHODS", "SSLMethod", "build_method", "register_method"]
