"""Does nothing: measures a Python analysis's instantiation and call overhead."""

import cleanroom


@cleanroom.analysis
def run(params):
    pass
