#!/usr/bin/env bash
# Lay out the installed file tree of backupd under DESTDIR; shared by the .deb and the .rpm.
# Usage: stage.sh DESTDIR WHEELHOUSE UNITDIR   (UNITDIR: /lib/systemd/system on Debian,
#        /usr/lib/systemd/system on Amazon Linux)
set -euo pipefail
dest=$1
wheels=$2
unitdir=$3
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/packaging/common

install -d "$dest/opt/backupd/wheels" "$dest/opt/backupd/libexec" "$dest/usr/bin" \
  "$dest/etc/backupd" "$dest$unitdir" "$dest/usr/share/doc/backupd" \
  "$dest/usr/share/backupd"
install -m 0644 "$wheels"/*.whl "$dest/opt/backupd/wheels/"
install -m 0755 "$here/backupd-maint" "$dest/opt/backupd/libexec/backupd-maint"
for cmd in backupd backupctl; do
  ln -sf "/opt/backupd/venv/bin/$cmd" "$dest/usr/bin/$cmd"
done
install -m 0640 "$root/config/backupd.example.toml" "$dest/etc/backupd/backupd.toml"
install -m 0600 "$here/my.cnf" "$dest/etc/backupd/my.cnf"
install -m 0644 "$root/systemd/backupd.service" "$dest$unitdir/backupd.service"
install -D -m 0644 "$here/sysusers.conf" "$dest/usr/lib/sysusers.d/backupd.conf"
install -m 0644 "$root/README.md" "$root"/docs/*.md "$dest/usr/share/doc/backupd/"
install -m 0644 "$root/config/backupd.example.toml" "$dest/usr/share/doc/backupd/"
for part in prometheus grafana aws; do
  install -d "$dest/usr/share/backupd/$part"
  find "$root/packaging/$part" -maxdepth 1 -type f \
    -exec install -m 0644 -t "$dest/usr/share/backupd/$part/" {} +
done
