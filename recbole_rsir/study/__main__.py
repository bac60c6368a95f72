import sys

from recbole_rsir.study.runner import main

sys.exit(main())
