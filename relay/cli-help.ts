/**
 * The help text of `transit-server` (printed by `--help`; every line fits 80
 * columns). The exit codes are relay/cli.ts's EXIT_* constants.
 */

export const USAGE = 'usage: transit-server --config <cluster.json> --host <name>\n                      [--drain-timeout-ms <ms>]\n       transit-server --help | --version';

export const HELP = `transit-server — the shmbus transit relay of one host

${USAGE}

Carries frames between the hosts of a cluster: it drains the host's outbound
inbox ("@relay" in shared memory) into authenticated TCP (or TLS) connections
to the other hosts' relays, and writes the frames that arrive into the local
endpoints' inboxes, exactly once, in order per (source, destination).

Options:
  --config <file>          the cluster config (JSON; README "Between hosts",
                           relay/config.ts); relative paths in it are relative
                           to its folder
  --host <name>            which host of the config this relay is
  --drain-timeout-ms <ms>  on SIGTERM/SIGINT, how long to wait for the acks of
                           frames in flight before exiting (default 5000)
  -h, --help               this text
  -V, --version            the version

Signals:
  SIGTERM, SIGINT  drain (stop reading, send what is queued, wait for acks,
                   tell peers), then exit 0; frames still unacked stay in
                   shared memory for the next start
  SIGKILL, OOM     nothing is lost or delivered twice once it is restarted

Output: one JSON object per line on stdout, with "time", "level" and "event"
(docs/OPERATIONS.md lists the events). Metrics, /healthz and /readyz on the
host's "metrics" address when configured.

Exit codes:
  0   stopped cleanly
  64  usage error
  69  cannot serve: a port is taken, or a live relay serves the namespace
  70  internal error (the "crash" line has the stack)
  78  the config is missing or invalid ("config_error" names the field)

Example:
  transit-server --config /etc/shmbus/cluster.json --host alpha
`;
