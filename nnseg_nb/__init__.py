"""nnseg_nb: nnU-Net v2, faithful and readable, for notebooks.

The library is one module per stage of nnU-Net's pipeline::

    paths -> io -> dataset -> fingerprint -> planning -> preprocessing -> (training, inference, ...)

Every stage reads and writes nnU-Net's own file formats, so the two tools can be mixed.
"""

__version__ = "0.1.0"
