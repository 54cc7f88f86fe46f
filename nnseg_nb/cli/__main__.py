"""``python -m nnseg_nb.cli ...`` (and ``torchrun -m nnseg_nb.cli train ...``): the ``nnseg-nb`` command.

python -m nnseg_nb.cli verify 901
"""

import sys

from nnseg_nb.cli import main

sys.exit(main())
