"""``python -m dmi_tf`` is ``python -m dmi_tf.train``."""

import sys

from dmi_tf.train import main

sys.exit(main())
