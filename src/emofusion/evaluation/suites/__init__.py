"""Built-in benchmark suites; each module registers its suites on import (one import line per module)."""

from emofusion.evaluation.suites import robustness  # noqa: F401
from emofusion.evaluation.suites import paper000  # noqa: F401
from emofusion.evaluation.suites import foundation  # noqa: F401
from emofusion.evaluation.suites import paper004  # noqa: F401
from emofusion.evaluation.suites import paper001  # noqa: F401
from emofusion.evaluation.suites import paper003  # noqa: F401
from emofusion.evaluation.suites import paper002  # noqa: F401
