"""The hardware catalog: datasheet and measured figures of devices, links and storage tiers.

Each figure carries its source. Entries live in ``hwsim/catalog/data/{devices,links,storage}.yaml``
in human units and are converted to SI once, at load, by :func:`load_catalog`. Software-stack
profiles (what a framework reaches of the hardware, which attention kernel it runs) are in
``data/stacks.yaml`` (:mod:`hwsim.catalog.stacks`). Ids are matched
case-insensitively: ``get_device("a100-sxm4-80gb")`` is ``get_device("A100-SXM4-80GB")``.
"""

from hwsim.catalog.loader import (SECTIONS, Catalog, catalog_rows, fit_compute_ramp, get_device,
                                  get_link, get_storage, load_catalog, parse_catalog_file)
from hwsim.catalog.stacks import StackProfile, get_stack, load_stacks
from hwsim.catalog.specs import (DEVICE_KINDS, DTYPES, LINK_CLASSES, STORAGE_KINDS, DeviceSpec,
                                 LinkSpec, StorageSpec)

__all__ = ["Catalog", "load_catalog", "parse_catalog_file", "get_device", "get_link", "get_storage",
           "catalog_rows", "fit_compute_ramp", "SECTIONS", "DeviceSpec", "LinkSpec", "StorageSpec",
           "DTYPES", "DEVICE_KINDS", "LINK_CLASSES", "STORAGE_KINDS", "StackProfile",
           "get_stack", "load_stacks"]
