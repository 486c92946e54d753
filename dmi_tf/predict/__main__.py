import sys

from dmi_tf.predict.cli import main

sys.exit(main())
