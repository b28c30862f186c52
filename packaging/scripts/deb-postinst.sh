#!/bin/sh
# postinst of the baton .deb.
set -e

if [ "$1" = configure ]; then
	# The system user of the unprivileged drop-in example
	# (/usr/share/doc/baton/examples/baton@.service.d/); the default unit
	# runs baton as root and does not use it.
	if ! getent passwd baton >/dev/null; then
		adduser --system --group --no-create-home --home /nonexistent \
			--quiet baton
	fi
	# Make systemd see the new or changed unit template. Running instances
	# are not restarted: restarting baton restarts the service it supervises;
	# do it (systemctl restart 'baton@*') when it suits you.
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload >/dev/null || true
	fi
fi
exit 0
