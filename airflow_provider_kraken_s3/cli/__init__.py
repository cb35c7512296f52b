"""The ``kraken-s3`` command line (see :mod:`.main`)."""
