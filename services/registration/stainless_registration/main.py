"""The registration consumer service (``stainless.stages.registration.service``)."""

from __future__ import annotations

from stainless.core.runners import run_consumer
from stainless.stages.registration.service import RegistrationServiceSettings, build


def main() -> None:
    run_consumer(build, RegistrationServiceSettings)


if __name__ == "__main__":
    main()
