"""The laptop side of deeplens-kit: datasets, training, evaluation and the device client.

`control.cli` is a thin command line over these modules; everything it does can be done
from Python too.
"""
