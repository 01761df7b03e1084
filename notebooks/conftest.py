"""The notebooks under pytest (`pytest --nbval-lax notebooks`): a private MISTUDIO_HOME and the
`ci` profile (small sizes), unless the tests/ session already set them; at the end, stop the
services the notebooks started."""

import os
import shutil
import tempfile

if "MISTUDIO_TEST_HOME" not in os.environ:  # run on its own, not after tests/
    os.environ["MISTUDIO_TEST_HOME"] = os.environ["MISTUDIO_HOME"] = tempfile.mkdtemp(prefix="mistudio-nb-home-")
    os.environ["MISTUDIO_PROFILE"] = "ci"
    for name in ("REDIS_URL", "REDIS_PASSWORD"):
        os.environ.pop(name, None)
    _OWN_HOME = os.environ["MISTUDIO_HOME"]
else:
    _OWN_HOME = None


def pytest_sessionfinish(session, exitstatus):
    from mistudio import lifecycle

    try:
        lifecycle.down()
    except Exception:
        pass
    if _OWN_HOME:
        shutil.rmtree(_OWN_HOME, ignore_errors=True)
