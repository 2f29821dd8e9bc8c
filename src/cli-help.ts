/**
 * The text of `shmbus help` / `shmbus --help` and of each command's help
 * (`shmbus help stat`, `shmbus stat --help`). Kept to 80 columns.
 */

/**
 * options.ts DEFAULT_DIR, written out: importing options.ts loads the native
 * addon, and help must print without it (test 35 checks they agree).
 */
export const DEFAULT_DIR = '/dev/shm';

export const EXIT_OK = 0;
export const EXIT_ERROR = 1;
export const EXIT_USAGE = 2;

/** The code of a command-line mistake (exit 2); the library's codes (exit 1) are in README "Errors". */
export const USAGE_CODE = 'ERR_SHMBUS_USAGE';
/** The code of an unexpected failure (a bug in shmbus; exit 1). */
export const INTERNAL_CODE = 'ERR_SHMBUS_INTERNAL';

export const COMMANDS = ['stat', 'gc', 'help'] as const;
export type Command = (typeof COMMANDS)[number];

/** The short form printed after a usage error. */
export const USAGE_LINE = `usage: shmbus <command> [options]   (commands: stat, gc, help)
Run 'shmbus --help' for the commands, options and exit codes.`;

const exitCodes = (watch: boolean) => `Exit codes:
  0  done${watch ? ' (stat --watch: also when stopped by Ctrl-C / SIGINT or SIGTERM)' : ''}
  1  a shmbus error: the folder is missing or unreadable (ERR_SHMBUS_SYSTEM),
     an invalid namespace or --dir (ERR_SHMBUS_INVALID_OPTION), a corrupt
     segment...; printed as "shmbus: CODE: message" on stderr
  2  a usage error (ERR_SHMBUS_USAGE): unknown command or option, a missing
     or bad option value, an option the command does not take

With --json, an error is one JSON object on one line on stderr:
  {"code":"ERR_SHMBUS_SYSTEM","message":"...","exitCode":1,...}
(plus "errno", "syscall" and "path" for ERR_SHMBUS_SYSTEM); stdout then
stays empty.`;

const COMMON_OPTIONS = `  -n, --namespace N   only namespace N (default: every namespace in the folder)
      --dir D         the folder of the segments (default: $SHMBUS_DIR, else
                      ${DEFAULT_DIR})
      --json          machine-readable output (and errors) as JSON`;

export const MAIN_HELP = `shmbus - look at and clean up shmbus namespaces (shared-memory IPC bus)

Usage:
  shmbus stat [options]        endpoints, inboxes and counters of namespaces
  shmbus gc   [options]        remove what dead processes left behind
  shmbus help [command]        this text, or the help of one command
  shmbus --version             print the version

Options:
${COMMON_OPTIONS}
  -h, --help          print help (after a command: that command's help)
  -V, --version       print the version of shmbus

stat options:
      --wide          every column with exact numbers (default: fits 80
                      columns, or a wider terminal; numbers like 12.3k)
      --watch         refresh every --interval seconds, with rates per second
      --interval S    seconds between --watch frames (default 2, min 0.05)
      --count N       stop --watch after N frames (default: until Ctrl-C)

${exitCodes(true)}

Examples:
  shmbus stat                         every namespace in ${DEFAULT_DIR}
  shmbus stat -n orders --wide        one namespace, every column
  shmbus stat --watch --interval 1    refresh every second (Ctrl-C stops)
  shmbus stat --json | jq '.[].endpoints[].depth'
  shmbus gc -n orders                 free entries of dead processes

Run 'shmbus help stat' or 'shmbus help gc' for more on a command.`;

export const STAT_HELP = `Usage: shmbus stat [--namespace N] [--dir D] [--json] [--wide]
                   [--watch [--interval S] [--count N]]

Shows each namespace in the folder: its endpoints (pid, state, queued
frames, lanes in use/lanes, frames sent, received, sends to it refused
because its lane was full, its own sends refused), a note for anything that
needs attention (a DEAD owner, a corrupt lane, producers refused for want of
a lane), and, when a transit relay runs there, the relay's counters per peer.
Counters are read without stopping anyone: a snapshot may be a few frames
stale.

Options:
${COMMON_OPTIONS}
                      (a JSON array of namespace reports; with --watch one
                      line per frame: {"frame","time","intervalSeconds",
                      "namespaces"}, each endpoint with "rates" per second)
      --wide          every column, exact numbers, names never shortened
                      (default: lines fit 80 columns, or the terminal's width;
                      long names are shortened in the middle with "…")
      --watch         a view refreshed every --interval seconds, like top: the
                      screen is cleared between frames when stdout is a
                      terminal, otherwise frames follow one another; the
                      counters become rates per second (sent/s, recv/s,
                      full/s; "-" in the first frame). Ctrl-C stops it (exit 0)
      --interval S    seconds between frames (default 2; from 0.05 to 86400)
      --count N       stop after N frames (a positive integer)

${exitCodes(true)}

Examples:
  shmbus stat --dir /dev/shm/myapp
  shmbus stat -n orders --watch --interval 0.5
  shmbus stat --watch --count 3 --json > frames.ndjson`;

export const GC_HELP = `Usage: shmbus gc [--namespace N] [--dir D] [--json]

Removes what dead processes left behind: directory entries whose owner died
(their unread frames are counted, then discarded), inbox files no live entry
owns, directories with no live entry, and shmbus files that are not valid
segments. Live endpoints are never touched.

Options:
${COMMON_OPTIONS}

${exitCodes(false)}

Examples:
  shmbus gc                  every namespace in the default folder
  shmbus gc -n orders --json`;

/** The help of `command`, or the main help. */
export function helpText(command?: Command): string {
  return command === 'stat' ? STAT_HELP : command === 'gc' ? GC_HELP : MAIN_HELP;
}
