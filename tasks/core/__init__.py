"""What every stage stands on: the workspace on disk (`workspace`: folders, atomic writes, pointers, locks, run
ids), records and their fates (`records`), provenance of every output (`provenance`: git commit, package
versions, file and code digests) and configuration (`config`: the base of the stage configs and the one
layering defaults < workspace config.yaml < --config file < flags)."""
