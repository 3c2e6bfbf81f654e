"""pmjobsd: the background job daemon of Secure Password Manager."""

import os

__version__ = "0.1.0"

# pydantic looks for plugins at its first model by reading the entry points of every installed
# distribution (importlib.metadata): tens of milliseconds of every start-up and command for
# plugins pmjobsd does not use.  Its documented switch turns the search off; a value already in
# the environment (even an empty one, which turns plugins back on) is left as it is.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
