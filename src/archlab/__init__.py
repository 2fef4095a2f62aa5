"""archlab: a workbench for language-model architecture research on small compute.

Importing archlab registers its architectures with ``AutoConfig`` / ``AutoModelForCausalLM``.
"""

from archlab import models  # noqa: F401  (registers the Auto classes)

__version__ = "0.1.0"
