#!/usr/bin/env bash
# Lay out the installed file tree of backupd under DESTDIR; shared by the .deb and the .rpm.
# Usage: stage.sh DESTDIR WHEELHOUSE UNITDIR ENVFILE ZSHDIR, per distribution family:
#        UNITDIR  /lib/systemd/system             /usr/lib/systemd/system (Amazon Linux)
#        ENVFILE  /etc/default/backupd             /etc/sysconfig/backupd
#        ZSHDIR   /usr/share/zsh/vendor-completions /usr/share/zsh/site-functions
set -euo pipefail
dest=$1
wheels=$2
unitdir=$3
envfile=$4
zshdir=$5
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
install -D -m 0600 "$here/backupd.env" "$dest$envfile"
# Man pages and completions are generated and committed (tests/unit/test_admin_files.py).
for page in "$root"/packaging/man/*.[0-9]; do
  section=${page##*.}
  install -d "$dest/usr/share/man/man$section"
  gzip -9n < "$page" > "$dest/usr/share/man/man$section/$(basename "$page").gz"
  chmod 0644 "$dest/usr/share/man/man$section/$(basename "$page").gz"
done
install -d "$dest/usr/share/bash-completion/completions" "$dest$zshdir"
for cmd in backupd backupctl; do
  install -m 0644 "$root/packaging/completions/$cmd.bash" \
    "$dest/usr/share/bash-completion/completions/$cmd"
  install -m 0644 "$root/packaging/completions/_$cmd" "$dest$zshdir/"
done
for part in prometheus grafana aws; do
  install -d "$dest/usr/share/backupd/$part"
  find "$root/packaging/$part" -maxdepth 1 -type f \
    -exec install -m 0644 -t "$dest/usr/share/backupd/$part/" {} +
done
