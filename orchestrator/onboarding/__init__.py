"""From the estate a hospital already has to a checked inventory, and kept current.

- ``base``: the inventory (or skeleton / segments file) an import starts from, read round-trip.
- ``mapping``: the mapping file (CSV columns; vSphere folders and attributes -> campus / role).
- ``records``: what an import found: one record per host, what it could not decide.
- ``vsphere_import``: the VMs, hypervisors and datastores a vCenter knows (pyVmomi).
- ``csv_import``: a CMDB / spreadsheet export.
- ``draft``: records merged into the base and written (comments, hand-written keys and TODOs kept).
- ``diff``: the inventory against the estate (what a shutdown would forget or get wrong).
- ``reach_check``: the read-only preflight (pinned keys, prompts, interfaces).
"""
