"""planning layer (see DESIGN.md): what-ifs that re-run scenarios."""

from hwsim.planning.sensitivity import sensitivity

__all__ = ["sensitivity"]
