__version__ = "0.0.1"

from .core import *
from .client import *
from .oidc import *
from .providers import *
from .oauth import *
from .buttons import *
from .tokens import *
from .tools import *
