/*
 * dyno-init: the PID 1 of a dyno. Small, static, never a resident interpreter
 * (measured: ~0.2 MiB per dyno, against ~5 MiB for a Python shim; with --journal, VmRSS
 * of the inner init 444 KiB against 336 KiB without, anonymous 52 KiB against 48, plus
 * up to BUF_SIZE while it holds output that journald has not taken).
 *
 *   dyno-init [--no-pidns] [--no-cgroupns] [--journal IDENT] -- COMMAND [ARG...]
 *
 * Default (systemd < 257, no PrivatePIDs=): the unit's main process
 *   outer: PR_SET_CHILD_SUBREAPER, read its cgroups, unshare(CLONE_NEWPID|CLONE_NEWNS|
 *          CLONE_NEWCGROUP), fork, drop every capability, forward signals to the
 *          inner init, exit with its status.
 *   inner: PID 1 of the new PID namespace: PR_SET_PDEATHSIG(SIGKILL), / rprivate,
 *          a fresh /proc (hidepid=invisible) that shows only the dyno's processes,
 *          a fresh /sys/fs/cgroup that shows only the dyno's own cgroup (below),
 *          drop every capability, fork+exec COMMAND, reap every child, forward
 *          signals, exit with COMMAND's status (128+N when killed by signal N).
 * The unit grants CAP_SYS_ADMIN as an ambient capability for unshare and mount only;
 * the command runs as a non-root user with no capabilities (exec of a non-root,
 * non-setuid binary with an empty ambient set keeps none).
 *
 * --no-pidns: no PID namespace of its own (systemd >= 257's PrivatePIDs=yes made us
 * PID 1 already; a build step shares the host's): reap and forward, and still the
 * cgroup namespace (unshare(CLONE_NEWNS|CLONE_NEWCGROUP) in this process).
 * --no-cgroupns: keep the unit's /sys/fs/cgroup (systemd >= 257 makes the namespace
 * itself, ProtectControlGroups=strict). With both, no capability is needed.
 *
 * The cgroup view. Without a cgroup namespace /sys/fs/cgroup is the host's whole tree:
 * every other app's slice, dyno units, their memory and CPU use and host PIDs. systemd
 * put the unit's main process in the unit's cgroup before exec, so a cgroup namespace
 * made here is rooted at the dyno's own cgroup; /sys/fs/cgroup is mounted again,
 * read-only, from inside it: cgroup2 on a unified (v2) host; on a v1 or hybrid host a
 * tmpfs holding each hierarchy in which the process sits in the unit's own cgroup
 * (memory, pids, cpu... and name=systemd, unified), named and linked as systemd does
 * (cpu,cpuacct with cpu and cpuacct links). A hierarchy where the process is elsewhere
 * (a controller the unit does not use leaves it in an ancestor) is left out: its root
 * would be that ancestor's, with other units in it. The dyno still reads its own
 * limits where runtimes look (memory.max, memory.limit_in_bytes, /proc/self/cgroup
 * "0::/"), as in a container.
 *
 * Forwarding: TERM, INT, HUP, QUIT, USR1 and USR2. When dyno-init is PID 1 of the
 * namespace, TERM/INT/HUP/QUIT go to every process of the dyno (Heroku: "This signal
 * sends to all processes in the dyno", dyno-shutdown-behavior); USR1/USR2 go to the
 * command only. Exit status 143 after SIGTERM is what systemd's
 * SuccessExitStatus=143 and Heroku's "Process exited with status 143" expect.
 *
 * A terminal on stdin (one-off dynos attached with a pty, `dynoctl run bash`): the
 * unit's session (systemd made it its controlling terminal) lets go of it, and the
 * command gets its own session with that terminal as controlling terminal (setsid +
 * TIOCSCTTY), so job control, Ctrl-C (SIGINT to the foreground process group),
 * SIGWINCH on a resize and SIGHUP when the terminal's master closes work as in ssh.
 *
 * --journal IDENT (the unit's stdout is its journal stream, StandardOutput=journal):
 * PID 1 owns the command's stdout and stderr through a pipe and forwards what comes out
 * of it to journald, so the command never writes to journald itself. When journald
 * drops the stream (`systemctl stop systemd-journald`: the stream's descriptor is
 * closed, the next write gets EPIPE) the command notices nothing: its lines are kept
 * (up to BUF_SIZE) and dyno-init reconnects to /run/systemd/journal/stdout, at most
 * once a RETRY_MS, sending the header systemd sends for StandardOutput=journal
 * (sd_journal_stream_fd(3): identifier, unit id, priority, level prefix, forward to
 * syslog/kmsg/console). journald finds the unit, and its LogExtraFields=, from the
 * cgroup of the connecting process (dyno-init is in the unit's), so the lines keep
 * their fields. The command is held up by its output for STALL_MS at most: when the
 * buffer is full and journald is gone, or has taken fewer than MIN_LINES lines (and
 * MIN_BYTES bytes) a second since the buffer filled (journald slowed down by its own
 * full disk took a trickle, ~600 lines a second, and held a request that logged 20,000
 * lines past the router's 30 s), new output is dropped until journald has emptied the
 * buffer; then one line says how much, in Heroku's words:
 * `Error L10 (output buffer overflow): N messages dropped since <time>.`
 *
 * Exit status 127: COMMAND not found/executable; 125: dyno-init itself failed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_INIT_FAILED 125
#define EXIT_NOT_FOUND 127

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2};
#define NFORWARDED (sizeof(forwarded) / sizeof(forwarded[0]))

#define JOURNAL_STDOUT "/run/systemd/journal/stdout"
#define BUF_SIZE 65536
#define RETRY_MS 250
#define STALL_MS 1000
/* A journald slower than both, with the buffer full, is a stalled one (a healthy one
 * takes tens of thousands of lines a second, a loaded one thousands). */
#define MIN_LINES 2000
#define MIN_BYTES (1024 * 1024)
/* The L10 line's size at most (note_lost). */
#define NOTE_MAX 160
/* systemd's defaults for a unit's stream: LOG_DAEMON|LOG_INFO, SyslogLevelPrefix=yes. */
#define STREAM_PRIORITY 30

/* The command's output on its way to journald (--journal). */
static struct {
	const char *ident; /* NULL: not forwarding */
	int in;            /* the pipe's read end; -1 once every writer is gone */
	int up;            /* fd 1 (and 2) is a live stream to journald */
	long long last_try;            /* CLOCK_MONOTONIC, ms */
	long long full_since;          /* the buffer full since (till journald emptied it) */
	unsigned long long taken;      /* bytes journald took since then */
	unsigned long taken_lines;     /* and lines */
	unsigned long lost;            /* lines dropped since `lost_since` */
	int mid_line;                  /* the last byte kept was not a newline */
	int line_start;                /* the last byte read, kept or not, was a newline */
	time_t lost_since;
	size_t len;
	char buf[BUF_SIZE];
} out = {.in = -1, .line_start = 1};

static void die(const char *what)
{
	fprintf(stderr, "dyno-init: %s: %s\n", what, strerror(errno));
	_exit(EXIT_INIT_FAILED);
}

static void noop(int sig) { (void)sig; }

/* Block the forwarded signals and SIGCHLD; they are taken from a signalfd.
 * A no-op handler too: a PID namespace's init drops default-disposition signals
 * sent from inside its namespace, and blocked+handled is never dropped. */
static void take_signals(sigset_t *set)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = noop;
	sigemptyset(set);
	sigaddset(set, SIGCHLD);
	for (size_t i = 0; i < NFORWARDED; i++) {
		sigaddset(set, forwarded[i]);
		if (sigaction(forwarded[i], &sa, NULL) < 0)
			die("sigaction");
	}
	if (sigaction(SIGCHLD, &sa, NULL) < 0)
		die("sigaction");
	if (sigprocmask(SIG_BLOCK, set, NULL) < 0)
		die("sigprocmask");
}

/* The child gets default dispositions and an empty mask before exec. */
static void restore_signals(void)
{
	sigset_t none;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (size_t i = 0; i < NFORWARDED; i++)
		sigaction(forwarded[i], &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* strict: a failure is fatal. Without the PID namespace there is nothing to drop
 * (the unit's bounding set is empty) and the seccomp filter may refuse capset. */
static void drop_capabilities(int strict)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	/* EINVAL: kernel without ambient capabilities; nothing to clear then. */
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL &&
	    strict)
		die("PR_CAP_AMBIENT_CLEAR_ALL");
	if (syscall(SYS_capset, &hdr, data) < 0 && strict)
		die("capset");
}

static int status_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return EXIT_INIT_FAILED;
}

static int all_processes_signal(int sig)
{
	return sig == SIGTERM || sig == SIGINT || sig == SIGHUP || sig == SIGQUIT;
}

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A new stream to journald on fds 1 and 2, as systemd makes one for
 * StandardOutput=journal; 0 when journald is not there (yet). */
static int reconnect(void)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX, .sun_path = JOURNAL_STDOUT};
	char header[300];
	out.last_try = now_ms();
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return 0;
	/* Unit id: journald trusts it from root only; it reads ours from the cgroup. */
	int n = snprintf(header, sizeof(header), "%s\n\n%d\n1\n0\n0\n0\n", out.ident,
			 STREAM_PRIORITY);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || n < 0 ||
	    (size_t)n >= sizeof(header) || send(fd, header, n, MSG_NOSIGNAL) != n) {
		close(fd);
		return 0;
	}
	shutdown(fd, SHUT_RD);
	if (dup2(fd, STDOUT_FILENO) < 0 || dup2(fd, STDERR_FILENO) < 0) {
		close(fd);
		return 0;
	}
	close(fd);
	out.up = 1;
	return 1;
}

/* Send what is buffered, without blocking; on a broken stream, reconnect (rate-limited). */
static void flush_output(void)
{
	while (out.len > 0) {
		if (!out.up && (now_ms() - out.last_try < RETRY_MS || !reconnect()))
			return;
		ssize_t n = send(STDOUT_FILENO, out.buf, out.len, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n > 0) {
			if (out.full_since) {
				out.taken += (size_t)n;
				for (const char *c = out.buf; (c = memchr(c, '\n', out.buf + n - c));
				     c++)
					out.taken_lines++;
			}
			memmove(out.buf, out.buf + n, out.len - (size_t)n);
			out.len -= (size_t)n;
			if (out.len == 0)
				out.full_since = 0;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			return;
		} else {
			out.up = 0; /* EPIPE, ECONNRESET: journald let the stream go */
		}
	}
}

/* UTC date of a time, without gmtime(): it pulls glibc's time zone code into a static
 * binary (+220 KB). Days to civil date: H. Hinnant's chrono-compatible algorithm. */
static void utc_date(time_t t, int *y, unsigned *mo, unsigned *d, long *secs)
{
	long long days = t / 86400;
	*secs = (long)(t % 86400);
	days += 719468;
	long long era = days / 146097;
	unsigned doe = (unsigned)(days - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*d = doy - (153 * mp + 2) / 5 + 1;
	*mo = mp < 10 ? mp + 3 : mp - 9;
	*y = (int)(yoe + era * 400 + (*mo <= 2));
}

/* Lines dropped, said once there is room again, after the lines kept before them. */
static void note_lost(void)
{
	char line[NOTE_MAX];
	int y;
	unsigned mo, d;
	long secs;
	if (!out.lost)
		return;
	utc_date(out.lost_since, &y, &mo, &d, &secs);
	int sep = out.mid_line;
	int n = snprintf(line, sizeof(line), "%sError L10 (output buffer overflow): %lu "
			 "messages dropped since %04d-%02u-%02uT%02ld:%02ld:%02ld+00:00.\n",
			 sep ? "\n" : "", out.lost, y, mo, d, secs / 3600, secs / 60 % 60,
			 secs % 60);
	if (n < 0 || (size_t)n > BUF_SIZE - out.len)
		return;
	memcpy(out.buf + out.len, line, (size_t)n);
	out.len += (size_t)n;
	out.lost = 0;
	out.mid_line = 0;
}

/* The buffer has room for what comes next: the command's output, and first the L10
 * line of what was dropped (kept output never joins output kept after a drop). */
static int room(void)
{
	return BUF_SIZE - out.len >= (out.lost ? NOTE_MAX : 1);
}

/* The buffer is full and journald is gone, or has taken less than MIN_LINES/MIN_BYTES a
 * second since the buffer filled, measured over STALL_MS at least (a journald that takes
 * a trickle must not hold the command up for longer). A journald that keeps up starts
 * a new measure. */
static int dropping(void)
{
	if (room())
		return 0;
	if (!out.up)
		return 1;
	long long now = now_ms();
	if (!out.full_since) {
		out.full_since = now;
		out.taken = out.taken_lines = 0;
		return 0;
	}
	long long took = now - out.full_since;
	if (took < STALL_MS)
		return 0;
	if (out.taken_lines * 1000ULL >= (unsigned long long)MIN_LINES * (unsigned long long)took ||
	    out.taken * 1000ULL >= (unsigned long long)MIN_BYTES * (unsigned long long)took) {
		out.full_since = now;
		out.taken = out.taken_lines = 0;
		return 0;
	}
	return 1;
}

/* Take what the command wrote: into the buffer while it has room, else (dropping())
 * read and drop it, counting lines. */
/* read() from the pipe: > 0 bytes read, 0 nothing more for now (the pipe is closed
 * once every writer is gone, or on an error). */
static ssize_t pipe_read(char *into, size_t size)
{
	for (;;) {
		ssize_t n = read(out.in, into, size);
		if (n > 0)
			return n;
		if (n < 0 && errno == EINTR)
			continue;
		if (n == 0 || errno != EAGAIN) {
			close(out.in);
			out.in = -1;
		}
		return 0;
	}
}

static void read_output(void)
{
	char scratch[4096];
	ssize_t n;
	while (out.in >= 0) {
		if (room()) {
			if (out.lost) {
				note_lost(); /* it fits: room() */
				continue;
			}
			if ((n = pipe_read(out.buf + out.len, BUF_SIZE - out.len)) == 0)
				return;
			out.len += (size_t)n;
			out.mid_line = out.buf[out.len - 1] != '\n';
			out.line_start = !out.mid_line;
			continue;
		}
		if (!dropping())
			return; /* back-pressure, as journald itself gives, for a while */
		if ((n = pipe_read(scratch, sizeof(scratch))) == 0)
			return;
		if (!out.lost)
			out.lost_since = time(NULL);
		/* Lines begun in what is dropped (one kept in part is not lost). */
		for (ssize_t i = 0; i < n; i++) {
			out.lost += out.line_start;
			out.line_start = scratch[i] == '\n';
		}
	}
}

/* At exit: what the command wrote last, given a moment to reach journald. */
static void drain_output(void)
{
	long long until = now_ms() + STALL_MS;
	if (!out.ident)
		return;
	while (now_ms() < until) {
		if (out.in >= 0)
			read_output();
		flush_output();
		if (out.len == 0 && out.lost) {
			note_lost();
			continue;
		}
		if (out.len == 0 && out.in < 0)
			return;
		struct pollfd p[2] = {{.fd = out.in, .events = POLLIN},
				      {.fd = out.up ? STDOUT_FILENO : -1, .events = POLLOUT}};
		if (!room() || out.in < 0)
			p[0].fd = -1;
		if (poll(p, 2, RETRY_MS) == 0 && out.len == 0)
			return; /* nothing more comes (background writers hold the pipe open) */
	}
}

/* Wait for `child`, reaping every other child on the way (we are a subreaper or a
 * PID 1), forwarding signals and (--journal) the command's output. Returns the exit
 * code derived from child's status. */
static int supervise(pid_t child, const sigset_t *set, int whole_namespace)
{
	int sfd = signalfd(-1, set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		die("signalfd");
	for (;;) {
		struct pollfd p[3] = {{.fd = sfd, .events = POLLIN},
				      {.fd = room() || dropping() ? out.in : -1,
				       .events = POLLIN},
				      {.fd = out.up && out.len ? STDOUT_FILENO : -1,
				       .events = POLLOUT}};
		/* Wake up to reconnect, or to start dropping after STALL_MS. */
		int timeout = out.len > 0 && (!out.up || !room()) ? RETRY_MS : -1;
		if (poll(p, 3, timeout) < 0) {
			if (errno == EINTR)
				continue;
			die("poll");
		}
		if (out.in >= 0)
			read_output();
		if (out.ident)
			flush_output();
		struct signalfd_siginfo info;
		while (read(sfd, &info, sizeof(info)) == sizeof(info)) {
			int sig = (int)info.ssi_signo;
			if (sig == SIGCHLD)
				continue;
			if (whole_namespace && all_processes_signal(sig))
				kill(-1, sig); /* every process of the namespace but us */
			else
				kill(child, sig);
		}
		for (;;) {
			int status;
			pid_t pid = waitpid(-1, &status, WNOHANG);
			if (pid < 0 && errno == EINTR)
				continue;
			if (pid <= 0)
				break;
			if (pid == child) {
				drain_output();
				close(sfd);
				return status_code(status);
			}
		}
	}
}

/* fd 2 is the same stream as fd 1 (systemd gives one connection for both). */
static int same_file(int a, int b)
{
	struct stat sa, sb;
	return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

static pid_t spawn(char **argv)
{
	int pipefd[2] = {-1, -1};
	struct stat st;
	/* Forward only a journal stream; a terminal or pipes (one-off dynos) stay as given. */
	if (out.ident && fstat(STDOUT_FILENO, &st) == 0 && S_ISSOCK(st.st_mode)) {
		if (pipe2(pipefd, O_CLOEXEC) < 0)
			die("pipe2");
		out.up = 1;
	} else {
		out.ident = NULL;
	}
	pid_t pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		restore_signals();
		if (pipefd[1] >= 0) {
			int both = same_file(STDOUT_FILENO, STDERR_FILENO);
			if (dup2(pipefd[1], STDOUT_FILENO) < 0 ||
			    (both && dup2(pipefd[1], STDERR_FILENO) < 0))
				die("dup2");
		}
		/* The terminal is ours to take: not the controlling terminal of another
		 * session (systemd does not make a passed descriptor one). */
		if (isatty(STDIN_FILENO)) {
			if (setsid() < 0)
				die("setsid");
			if (ioctl(STDIN_FILENO, TIOCSCTTY, 0) < 0)
				die("TIOCSCTTY");
		}
		execvp(argv[0], argv);
		fprintf(stderr, "dyno-init: %s: %s\n", argv[0], strerror(errno));
		_exit(errno == ENOENT || errno == EACCES ? EXIT_NOT_FOUND : EXIT_INIT_FAILED);
	}
	if (pipefd[1] >= 0) {
		close(pipefd[1]);
		if (fcntl(pipefd[0], F_SETFL, O_NONBLOCK) < 0)
			die("fcntl");
		out.in = pipefd[0];
	}
	return pid;
}

static void fresh_proc(void)
{
	const unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
	/* hidepid=invisible needs Linux 5.8; hidepid=2 is the older spelling. */
	if (mount("proc", "/proc", "proc", flags, "hidepid=invisible") == 0)
		return;
	if (mount("proc", "/proc", "proc", flags, "hidepid=2") == 0)
		return;
	die("mount /proc");
}

#define CGROUP_ROOT "/sys/fs/cgroup"
#define MAX_HIERARCHIES 32
#define MOUNT_FLAGS (MS_NOSUID | MS_NODEV | MS_NOEXEC)

/* One hierarchy to mount under /sys/fs/cgroup: its directory, and "" for cgroup2 or
 * the cgroup v1 mount options. */
struct hierarchy {
	char dir[128];
	char options[160];
};

struct cgroup_view {
	int unified;  /* cgroup v2 only: one cgroup2 mount at /sys/fs/cgroup */
	int count;    /* hierarchies to mount (0 on v2 means an empty, read-only tmpfs) */
	struct hierarchy h[MAX_HIERARCHIES];
};

/* The cgroups this process is in, before the cgroup namespace hides their paths:
 * which hierarchies show the unit's own cgroup ("0::" on v2 and hybrid hosts, the
 * name=systemd one on a pure v1 host). A process at a hierarchy's root (not in a
 * unit of its own) mounts none. */
static void read_cgroups(struct cgroup_view *view)
{
	static char lines[MAX_HIERARCHIES][PATH_MAX];
	int n = 0;
	FILE *f = fopen("/proc/self/cgroup", "re");
	if (f == NULL)
		die("open /proc/self/cgroup");
	while (n < MAX_HIERARCHIES && fgets(lines[n], sizeof(lines[n]), f) != NULL) {
		size_t len = strcspn(lines[n], "\n");
		if (lines[n][len] != '\n') {
			fputs("dyno-init: a line of /proc/self/cgroup is too long\n", stderr);
			_exit(EXIT_INIT_FAILED);
		}
		lines[n][len] = '\0';
		n++;
	}
	fclose(f);

	const char *own = NULL;
	const char *systemd_path = NULL;
	for (int i = 0; i < n; i++) {
		char *first = strchr(lines[i], ':');
		char *second = first ? strchr(first + 1, ':') : NULL;
		if (second == NULL)
			continue;
		if (first + 1 == second && strncmp(lines[i], "0:", 2) == 0 && strcmp(second + 1, "/") != 0)
			own = second + 1;
		else if (strncmp(first + 1, "name=systemd:", 13) == 0)
			systemd_path = second + 1;
	}
	if (own == NULL && systemd_path != NULL && strcmp(systemd_path, "/") != 0)
		own = systemd_path;

	memset(view, 0, sizeof(*view));
	view->unified = n == 1 && strncmp(lines[0], "0::", 3) == 0;
	if (own == NULL || view->unified) {
		view->count = own != NULL;
		return;
	}
	for (int i = 0; i < n; i++) {
		char *first = strchr(lines[i], ':');
		char *second = first ? strchr(first + 1, ':') : NULL;
		if (second == NULL || strcmp(second + 1, own) != 0 || view->count >= MAX_HIERARCHIES)
			continue;
		*second = '\0';
		const char *controllers = first + 1;
		struct hierarchy *h = &view->h[view->count];
		int len;
		if (*controllers == '\0')
			len = snprintf(h->dir, sizeof(h->dir), "unified");
		else if (strncmp(controllers, "name=", 5) == 0) {
			len = snprintf(h->dir, sizeof(h->dir), "%s", controllers + 5);
			if (len > 0 && (size_t)len < sizeof(h->dir))
				len = snprintf(h->options, sizeof(h->options), "none,%s", controllers);
		} else {
			len = snprintf(h->dir, sizeof(h->dir), "%s", controllers);
			if (len > 0 && (size_t)len < sizeof(h->dir))
				len = snprintf(h->options, sizeof(h->options), "%s", controllers);
		}
		if (len <= 0 || (size_t)len >= sizeof(h->options) || strchr(h->dir, '/') != NULL)
			continue;
		view->count++;
	}
}

/* Inside the new mount and cgroup namespaces: /sys/fs/cgroup again, read-only,
 * showing only the cgroup the namespace is rooted at. */
static void fresh_cgroups(const struct cgroup_view *view)
{
	const unsigned long ro = MOUNT_FLAGS | MS_RDONLY;
	const char *tmpfs_options = "mode=0755,size=64k";
	char path[256];
	if (view->unified && view->count > 0) {
		if (mount("cgroup2", CGROUP_ROOT, "cgroup2", ro, NULL) < 0)
			die("mount cgroup2 on " CGROUP_ROOT);
		return;
	}
	if (mount("tmpfs", CGROUP_ROOT, "tmpfs", MOUNT_FLAGS, tmpfs_options) < 0)
		die("mount tmpfs on " CGROUP_ROOT);
	for (int i = 0; i < view->count; i++) {
		const struct hierarchy *h = &view->h[i];
		snprintf(path, sizeof(path), CGROUP_ROOT "/%s", h->dir);
		if (mkdir(path, 0755) < 0)
			die("mkdir under " CGROUP_ROOT);
		int cgroup2 = h->options[0] == '\0';
		if (mount("cgroup", path, cgroup2 ? "cgroup2" : "cgroup", ro,
			  cgroup2 ? NULL : h->options) < 0) {
			fprintf(stderr, "dyno-init: mount %s: %s\n", path, strerror(errno));
			_exit(EXIT_INIT_FAILED);
		}
		/* systemd's names: cpu and cpuacct link to cpu,cpuacct. */
		if (cgroup2 || strchr(h->dir, ',') == NULL || strchr(h->dir, '=') != NULL)
			continue;
		char names[sizeof(h->dir)];
		char *save = NULL;
		memcpy(names, h->dir, sizeof(names));
		for (char *name = strtok_r(names, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
			snprintf(path, sizeof(path), CGROUP_ROOT "/%s", name);
			if (symlink(h->dir, path) < 0 && errno != EEXIST)
				die("symlink under " CGROUP_ROOT);
		}
	}
	if (mount(NULL, CGROUP_ROOT, NULL, MS_REMOUNT | ro, tmpfs_options) < 0)
		die("remount " CGROUP_ROOT " read-only");
}

static int run_pidns(char **argv, int cgroupns)
{
	sigset_t set;
	struct cgroup_view view;
	take_signals(&set);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	if (cgroupns)
		read_cgroups(&view);
	if (unshare(CLONE_NEWPID | CLONE_NEWNS | (cgroupns ? CLONE_NEWCGROUP : 0)) < 0)
		die(cgroupns ? "unshare(CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWCGROUP)"
			     : "unshare(CLONE_NEWPID|CLONE_NEWNS)");
	pid_t outer = getpid();
	pid_t inner = fork();
	if (inner < 0)
		die("fork");
	if (inner > 0) {
		drop_capabilities(1);
		return supervise(inner, &set, 0);
	}
	/* PID 1 of the dyno. If the outer process is gone already, so is the dyno. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
		die("PR_SET_PDEATHSIG");
	if (getppid() != outer && getppid() != 0)
		_exit(EXIT_INIT_FAILED);
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
		die("make / rprivate");
	fresh_proc();
	if (cgroupns)
		fresh_cgroups(&view);
	drop_capabilities(1);
	pid_t app = spawn(argv);
	return supervise(app, &set, 1);
}

static int run_plain(char **argv, int cgroupns)
{
	sigset_t set;
	take_signals(&set);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		die("PR_SET_CHILD_SUBREAPER");
	if (cgroupns) {
		struct cgroup_view view;
		read_cgroups(&view);
		if (unshare(CLONE_NEWNS | CLONE_NEWCGROUP) < 0)
			die("unshare(CLONE_NEWNS|CLONE_NEWCGROUP)");
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
			die("make / rprivate");
		fresh_cgroups(&view);
	}
	drop_capabilities(cgroupns);
	pid_t app = spawn(argv);
	return supervise(app, &set, getpid() == 1);
}

/* systemd makes a terminal passed as stdin the controlling terminal of the unit's
 * session, whose leader is us: give it up, so the command can take it in its own
 * session. Giving it up sends SIGHUP to the terminal's foreground group (ours): ignored
 * for that moment. Not a terminal, not ours: nothing to do. */
static void release_terminal(void)
{
	struct sigaction ignore, old;
	if (!isatty(STDIN_FILENO) || getsid(0) != getpid())
		return;
	memset(&ignore, 0, sizeof(ignore));
	ignore.sa_handler = SIG_IGN;
	if (sigaction(SIGHUP, &ignore, &old) < 0)
		die("sigaction");
	(void)ioctl(STDIN_FILENO, TIOCNOTTY);
	if (sigaction(SIGHUP, &old, NULL) < 0)
		die("sigaction");
}

static void usage(void)
{
	fputs("usage: dyno-init [--no-pidns] [--no-cgroupns] [--journal IDENT] -- COMMAND [ARG...]\n",
	      stderr);
	exit(EXIT_INIT_FAILED);
}

int main(int argc, char **argv)
{
	int pidns = 1;
	int cgroupns = 1;
	int i = 1;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--no-pidns") == 0)
			pidns = 0;
		else if (strcmp(argv[i], "--no-cgroupns") == 0)
			cgroupns = 0;
		else if (strcmp(argv[i], "--journal") == 0 && i + 1 < argc && argv[i + 1][0] &&
			 strlen(argv[i + 1]) < 200 && !strchr(argv[i + 1], '\n'))
			out.ident = argv[++i];
		else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else
			usage();
	}
	if (i >= argc)
		usage();
	release_terminal();
	return pidns ? run_pidns(argv + i, cgroupns) : run_plain(argv + i, cgroupns);
}
