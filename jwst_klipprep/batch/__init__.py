"""Whole programs at once: associations from a folder of files, and batches on Dask.

``associate`` groups stage-2 coronagraphic files (headers only) into level-3 associations;
``run_batch`` runs the klipprep pipeline on many associations as ``dask.distributed`` tasks
(a local cluster by default, or any running scheduler). See ``docs/cluster.rst``.
"""

from jwst_klipprep.batch.associate import Exposure, Group, associate, format_groups
from jwst_klipprep.batch.runner import expected_products, find_asns, product_is_complete, run_batch

__all__ = ["Exposure", "Group", "associate", "expected_products", "find_asns", "format_groups",
           "product_is_complete", "run_batch"]
