"""intriguing: a reproduction and extension of Szegedy et al., "Intriguing properties of neural
networks" (ICLR 2014, arXiv:1312.6199), for the paper's MNIST models and your own.

The public surface is flat: ``intriguing.data``, ``intriguing.zoo``, ``intriguing.training``,
``intriguing.attacks``, and one module per further concept of the paper (see ARCHITECTURE.md).
"""

from intriguing import data, errors, zoo
from intriguing.errors import IntriguingError
from intriguing.versions import __version__

__all__ = ["IntriguingError", "data", "errors", "zoo", "__version__"]
