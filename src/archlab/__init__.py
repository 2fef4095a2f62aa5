"""archlab: a workbench for language-model architecture research on small compute.

Importing archlab registers its architectures with ``AutoConfig`` / ``AutoModelForCausalLM``.
"""

from archlab._startup import guard_startup

guard_startup()  # the `archlab` command only: Ctrl-C during the imports below exits with one line

from archlab import models  # noqa: E402, F401  (registers the Auto classes)

__version__ = "0.1.0"
