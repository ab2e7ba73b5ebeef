#!/usr/bin/env bash
# Compress sync-worker logs older than one day and delete compressed logs older than 30 days.
# Runs from cron on every sync host: 15 3 * * * /opt/sync/bin/rotate-logs.sh
set -euo pipefail

LOG_DIR="${LOG_DIR:-/var/log/sync}"
KEEP_DAYS="${KEEP_DAYS:-30}"

if [[ ! -d "$LOG_DIR" ]]; then
  echo "log dir $LOG_DIR does not exist" >&2
  exit 1
fi

# gzip yesterday's and older plain logs (the current one is still being written)
find "$LOG_DIR" -maxdepth 1 -name '*.log.*' ! -name '*.gz' -mtime +0 -print0 |
  xargs -0 -r gzip -9

# delete old archives
deleted=$(find "$LOG_DIR" -maxdepth 1 -name '*.gz' -mtime +"$KEEP_DAYS" -print -delete | wc -l)
logger -t rotate-logs "compressed old logs, deleted $deleted archive(s) older than $KEEP_DAYS days"
