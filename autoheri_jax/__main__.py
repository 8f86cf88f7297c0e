import sys

from autoheri_jax.cli import main

sys.exit(main())
