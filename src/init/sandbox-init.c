/*
 * sandbox-init: PID 1 of every sandbox.
 *
 * The runner clones the sandbox from its host with CLONE_VM (no copy of the host's memory),
 * sets the sandbox up, and the init then execs this program from a sealed memfd. From that
 * exec on, PID 1 holds nothing of the host: its cmdline, environment, mappings and memory
 * are this program's own, a few pages in all.
 *
 * Freestanding (no libc): raw system calls only, no allocation, no globals written.
 *
 *   argv: sandbox-init PLUGIN_PID STATUS_FD GO_FD FORWARD_MASK
 *   argv: sandbox-reaper SOCKET_FD [OWNER CLAIMS_DIR]   (the reaper mode, see reap() below)
 *
 * 1. makes itself non-dumpable, so nothing in the sandbox can ptrace it or read its memory;
 * 2. blocks every signal (32 and 33 included) and resets every action to its default;
 * 3. writes one byte to GO_FD: the plugin, which waited for it, goes on to its execve;
 * 4. loops: SIGCHLD reaps every child the namespace hands it, and when PLUGIN_PID exits its
 *    raw wait status goes to STATUS_FD and the init exits with the plugin's code (128 + N
 *    for signal N); a signal in FORWARD_MASK (bit N for signal N) is sent to the plugin.
 *
 * When it exits, the kernel kills everything left in the PID namespace.
 */

#if defined(__x86_64__)
#define NR_write 1
#define NR_close 3
#define NR_rt_sigaction 13
#define NR_rt_sigprocmask 14
#define NR_wait4 61
#define NR_kill 62
#define NR_rt_sigtimedwait 128
#define NR_prctl 157
#define NR_exit_group 231
#define NR_read 0
#define NR_openat 257
#define NR_unlinkat 263
#define NR_getdents64 217
#define NR_nanosleep 35
#define NR_setsid 112
#define NR_clone 56
#define NR_umount2 166

static long sys(long n, long a, long b, long c, long d)
{
	long ret;
	register long r10 __asm__("r10") = d;
	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
			 : "rcx", "r11", "memory");
	return ret;
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	xor %rbp, %rbp\n"
	"	mov %rsp, %rdi\n"
	"	and $-16, %rsp\n"
	"	call start_c\n"
	"	hlt\n");

#elif defined(__aarch64__)
#define NR_write 64
#define NR_close 57
#define NR_rt_sigaction 134
#define NR_rt_sigprocmask 135
#define NR_wait4 260
#define NR_kill 129
#define NR_rt_sigtimedwait 137
#define NR_prctl 167
#define NR_exit_group 94
#define NR_read 63
#define NR_openat 56
#define NR_unlinkat 35
#define NR_getdents64 61
#define NR_nanosleep 101
#define NR_setsid 157
#define NR_clone 220
#define NR_umount2 39

static long sys(long n, long a, long b, long c, long d)
{
	register long x8 __asm__("x8") = n;
	register long x0 __asm__("x0") = a;
	register long x1 __asm__("x1") = b;
	register long x2 __asm__("x2") = c;
	register long x3 __asm__("x3") = d;
	__asm__ volatile("svc 0"
			 : "+r"(x0)
			 : "r"(x8), "r"(x1), "r"(x2), "r"(x3)
			 : "memory");
	return x0;
}

__asm__(".text\n"
	".global _start\n"
	"_start:\n"
	"	mov x29, #0\n"
	"	mov x30, #0\n"
	"	mov x0, sp\n"
	"	bl start_c\n"
	"	brk #0\n");
#else
#error "sandbox-init: unsupported architecture"
#endif

#define PR_SET_DUMPABLE 4
#define PR_SET_NAME 15
#define SIG_SETMASK 2
#define SIGKILL 9
#define SIGSTOP 19
#define SIGCHLD 17
#define WNOHANG 1

/* The kernel's struct sigaction: all zero is SIG_DFL with no flags and an empty mask. */
struct ksigaction {
	unsigned long handler, flags, restorer, mask;
};

static __attribute__((noreturn)) void die(long code)
{
	for (;;)
		sys(NR_exit_group, code, 0, 0, 0);
}

/* A decimal argument, or -1. */
static long number(const char *s)
{
	long v = 0;
	if (!s || !*s)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9' || v > (1L << 56))
			return -1;
		v = v * 10 + (*s - '0');
	}
	return v;
}

/* ---------------------------------------------------------------- the reaper mode
 *
 * One reaper per host process, started once, not a child of any sandbox. The host sends it,
 * over a SOCK_SEQPACKET socket, one message per attached sandbox it starts and one when it
 * has cleaned that sandbox up itself:
 *
 *   "+" ID "\0" (KIND PATH "\0")...     KIND: 'c' cgroup dir, 'd' directory tree, 'r' record
 *   "-" ID "\0"
 *
 * When the socket reaches end of file, the host is gone (its sandboxes die with it through
 * their death signal). For every sandbox still registered, the reaper then kills what is
 * left in its cgroups (cgroup.kill, v2), removes them (retrying while busy, 2 s in all),
 * tries their shared "sandbox-runner" parent, removes the directory trees (bounded depth),
 * and deletes the owner records last, only when every cgroup is gone (otherwise a later
 * start or `check --cleanup` still finds them). Last, given OWNER and CLAIMS_DIR, it removes
 * the host's id claims that no record names: a host claims its id block before it can
 * register it, and may die in between. Then it exits. Every path is absolute and
 * was chosen by the host; nothing the sandbox wrote is followed (O_NOFOLLOW, no symlinks).
 */

#define O_RDONLY 0
#define O_WRONLY 1
#define O_DIRECTORY 0200000
#define O_NOFOLLOW 0400000
#define O_CLOEXEC 02000000
#define AT_FDCWD -100
#define AT_REMOVEDIR 0x200
#define EINTR 4
#define EBUSY 16
#define EISDIR 21
#define ENOENT 2

/* The registered sandboxes: records of [len:u32][message without its '+'], back to back. */
static char arena[1 << 20];
static unsigned long used;

static unsigned long len_of(const char *s)
{
	unsigned long n = 0;
	while (s[n])
		n++;
	return n;
}

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

static void copy(char *d, const char *s, unsigned long n)
{
	while (n--)
		*d++ = *s++;
}

static void forget(const char *id)
{
	unsigned long off = 0;
	while (off < used) {
		unsigned int n = *(unsigned int *)(arena + off);
		if (same(arena + off + 4, id)) {
			unsigned long next = off + 4 + n;
			copy(arena + off, arena + next, used - next);
			used -= next - off;
			return;
		}
		off += 4 + n;
	}
}

static void remember(const char *msg, unsigned long n)
{
	/* Full: the host's own reclaim (next start, check --cleanup) still covers it. */
	if (n == 0 || used + 4 + n > sizeof(arena))
		return;
	*(unsigned int *)(arena + used) = (unsigned int)n;
	copy(arena + used + 4, msg, n);
	used += 4 + n;
}

static void nap_ms(long ms)
{
	long ts[2] = { 0, ms * 1000000L };
	sys(NR_nanosleep, (long)ts, 0, 0, 0);
}

/* Removes dirfd/name and everything below it, down to a bounded depth, never following a
 * symbolic link. Returns whether it is gone. */
static int remove_tree(long dirfd, const char *name, int depth)
{
	long r = sys(NR_unlinkat, dirfd, (long)name, 0, 0);
	if (r == 0 || r == -ENOENT)
		return 1;
	if (r != -EISDIR)
		return 0;
	if (depth < 64) {
		long fd = sys(NR_openat, dirfd, (long)name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
		if (fd >= 0) {
			char buf[2048];
			int pass, removed = 1;
			/* Listing while removing may skip entries: list again until a pass removes none. */
			for (pass = 0; pass < 64 && removed; pass++) {
				long n, pos;
				removed = 0;
				while ((n = sys(NR_getdents64, fd, (long)buf, sizeof(buf), 0)) > 0) {
					for (pos = 0; pos < n;) {
						unsigned short reclen = *(unsigned short *)(buf + pos + 16);
						const char *d = buf + pos + 19;
						if (!(d[0] == '.' && (d[1] == 0 || (d[1] == '.' && d[2] == 0))) &&
						    remove_tree(fd, d, depth + 1))
							removed = 1;
						pos += reclen;
					}
				}
				if (removed) {
					sys(NR_close, fd, 0, 0, 0);
					fd = sys(NR_openat, dirfd, (long)name,
						 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
					if (fd < 0)
						break;
				}
			}
			if (fd >= 0)
				sys(NR_close, fd, 0, 0, 0);
		}
	}
	r = sys(NR_unlinkat, dirfd, (long)name, AT_REMOVEDIR, 0);
	return r == 0 || r == -ENOENT;
}

/* path + "/" + leaf into buf, or 0 when it does not fit. */
static const char *join(char *buf, unsigned long size, const char *path, const char *leaf)
{
	unsigned long a = len_of(path), b = len_of(leaf);
	if (a + 1 + b + 1 > size)
		return 0;
	copy(buf, path, a);
	buf[a] = '/';
	copy(buf + a + 1, leaf, b + 1);
	return buf;
}

/* Removes the cgroups of one record; returns whether none is left. */
static int remove_cgroups(const char *rec, unsigned long n, int kill)
{
	unsigned long pos = len_of(rec) + 1;
	int left = 0;
	while (pos < n) {
		const char *item = rec + pos;
		pos += len_of(item) + 1;
		if (item[0] != 'c')
			continue;
		if (kill) {
			char buf[4096];
			const char *p = join(buf, sizeof(buf), item + 1, "cgroup.kill");
			long fd = p ? sys(NR_openat, AT_FDCWD, (long)p, O_WRONLY | O_CLOEXEC, 0) : -1;
			if (fd >= 0) {
				sys(NR_write, fd, (long)"1", 1, 0);
				sys(NR_close, fd, 0, 0, 0);
			}
		}
		long r = sys(NR_unlinkat, AT_FDCWD, (long)(item + 1), AT_REMOVEDIR, 0);
		if (r != 0 && r != -ENOENT)
			left = 1;
	}
	return !left;
}

static void cleanup_one(const char *rec, unsigned long n, int cgroups_gone)
{
	unsigned long pos = len_of(rec) + 1;
	while (pos < n) {
		const char *item = rec + pos;
		pos += len_of(item) + 1;
		if (item[0] == 'c') {
			/* The shared parent, when this was its last sandbox (EBUSY otherwise). */
			char parent[4096];
			unsigned long k = len_of(item + 1);
			if (k >= sizeof(parent))
				continue;
			copy(parent, item + 1, k + 1);
			while (k > 0 && parent[k] != '/')
				k--;
			parent[k] = 0;
			if (k >= 15 && same(parent + k - 15, "/sandbox-runner"))
				sys(NR_unlinkat, AT_FDCWD, (long)parent, AT_REMOVEDIR, 0);
		} else if (item[0] == 'm') {
			/* The socket directory's tmpfs: whatever the plugin made in it goes with it.
			 * MNT_DETACH | UMOUNT_NOFOLLOW; not a mount point (rootless) is EINVAL. */
			sys(NR_umount2, (long)(item + 1), 2 | 8, 0, 0);
		} else if (item[0] == 'd') {
			remove_tree(AT_FDCWD, item + 1, 0);
		} else if (item[0] == 'r' && cgroups_gone) {
			sys(NR_unlinkat, AT_FDCWD, (long)(item + 1), 0, 0);
		}
	}
}

/* Whether the n bytes at hay hold needle. */
static int holds(const char *hay, unsigned long n, const char *needle)
{
	unsigned long k = len_of(needle), i, j;
	if (k == 0 || k > n)
		return 0;
	for (i = 0; i + k <= n; i++) {
		for (j = 0; j < k && hay[i + j] == needle[j]; j++)
			;
		if (j == k)
			return 1;
	}
	return 0;
}

/* Whether some record registers path as an 'r' item (its removal is cleanup_one's call). */
static int registered(const char *path)
{
	unsigned long off, pos;
	for (off = 0; off < used;) {
		unsigned int n = *(unsigned int *)(arena + off);
		const char *rec = arena + off + 4;
		for (pos = len_of(rec) + 1; pos < n; pos += len_of(rec + pos) + 1)
			if (rec[pos] == 'r' && same(rec + pos + 1, path))
				return 1;
		off += 4 + n;
	}
	return 0;
}

/* Removes the id claims in dir (files named by digits only) whose text holds owner, the
 * host's `"owner_pid":P,"owner_start":S}`, and that no record registers: a block the host
 * claimed and died before it could register (the claim comes first, so no cgroup or
 * process of that sandbox existed yet). Registered claims follow their cgroups. */
static void sweep_claims(const char *dir, const char *owner)
{
	char buf[2048], text[1024], path[4096];
	long fd = sys(NR_openat, AT_FDCWD, (long)dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0);
	long n, pos;
	if (fd < 0)
		return;
	while ((n = sys(NR_getdents64, fd, (long)buf, sizeof(buf), 0)) > 0) {
		for (pos = 0; pos < n;) {
			unsigned short reclen = *(unsigned short *)(buf + pos + 16);
			const char *d = buf + pos + 19;
			const char *c = d;
			pos += reclen;
			while (*c >= '0' && *c <= '9')
				c++;
			if (c == d || *c)
				continue;
			long f = sys(NR_openat, fd, (long)d, O_RDONLY | O_NOFOLLOW | O_CLOEXEC, 0);
			if (f < 0)
				continue;
			long got = sys(NR_read, f, (long)text, sizeof(text), 0);
			sys(NR_close, f, 0, 0, 0);
			if (got <= 0 || !holds(text, (unsigned long)got, owner))
				continue;
			if (!join(path, sizeof(path), dir, d) || registered(path))
				continue;
			sys(NR_unlinkat, fd, (long)d, 0, 0);
		}
	}
	sys(NR_close, fd, 0, 0, 0);
}

static __attribute__((noreturn)) void reap(long sock, const char *owner, const char *claims)
{
	static char msg[65536];
	unsigned long all = ~0UL;
	unsigned long off;
	int round;

	sys(NR_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, sizeof(all));
	/* Leave the host: the first process exits at once (the host reaps it), the second goes
	 * on, reparented to the system's init (or the host's subreaper), never the host's child,
	 * so a host that waits for its children never waits for it. */
	long child = sys(NR_clone, SIGCHLD, 0, 0, 0);
	if (child != 0)
		die(child > 0 ? 0 : 125);
	sys(NR_prctl, PR_SET_NAME, (long)"sandbox-reaper", 0, 0);
	/* Out of the host's session: a terminal's ^C to the host's group must not reach us. */
	sys(NR_setsid, 0, 0, 0, 0);
	for (;;) {
		long n = sys(NR_read, sock, (long)msg, sizeof(msg) - 1, 0);
		if (n == -EINTR)
			continue;
		if (n <= 0)
			break;
		msg[n] = 0;
		if (msg[0] == '+')
			remember(msg + 1, (unsigned long)n - 1);
		else if (msg[0] == '-')
			forget(msg + 1);
	}
	/* The host is gone. Its sandboxes die with it; wait for their cgroups to empty. */
	for (round = 0; round < 200; round++) {
		int all_gone = 1;
		for (off = 0; off < used;) {
			unsigned int n = *(unsigned int *)(arena + off);
			if (!remove_cgroups(arena + off + 4, n, round == 0))
				all_gone = 0;
			off += 4 + n;
		}
		if (all_gone)
			break;
		nap_ms(10);
	}
	for (off = 0; off < used;) {
		unsigned int n = *(unsigned int *)(arena + off);
		cleanup_one(arena + off + 4, n, remove_cgroups(arena + off + 4, n, 0));
		off += 4 + n;
	}
	if (owner && claims)
		sweep_claims(claims, owner);
	die(0);
}

__attribute__((noreturn, used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
	if (argc == 2 || argc == 4) {
		long sock = number(argv[1]);
		if (sock < 0)
			die(125);
		reap(sock, argc == 4 ? argv[2] : 0, argc == 4 ? argv[3] : 0);
	}
	unsigned long all = ~0UL;
	struct ksigaction dfl = { 0, 0, 0, 0 };
	long plugin, status_fd, go_fd, sig;
	unsigned long forward;
	int st;

	if (argc != 5)
		die(125);
	plugin = number(argv[1]);
	status_fd = number(argv[2]);
	go_fd = number(argv[3]);
	forward = (unsigned long)number(argv[4]);
	if (plugin <= 0 || status_fd < 0 || go_fd < 0)
		die(125);
	if (sys(NR_prctl, PR_SET_DUMPABLE, 0, 0, 0) != 0)
		die(125);
	sys(NR_prctl, PR_SET_NAME, (long)"sandbox-init", 0, 0);
	if (sys(NR_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, sizeof(all)) != 0)
		die(125);
	for (sig = 1; sig <= 64; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sys(NR_rt_sigaction, sig, (long)&dfl, 0, sizeof(all));
	/* Let the plugin go on to its execve. */
	sys(NR_write, go_fd, (long)"1", 1, 0);
	sys(NR_close, go_fd, 0, 0, 0);
	/* Reap before every wait: the plugin may have ended before this exec (a failed setup
	 * step), and resetting SIGCHLD to its default (ignore) above discarded that pending
	 * SIGCHLD, so no signal would ever say so. */
	for (;;) {
		for (;;) {
			long r = sys(NR_wait4, -1, (long)&st, WNOHANG, 0);
			if (r <= 0)
				break;
			if (r == plugin) {
				sys(NR_write, status_fd, (long)&st, sizeof(st), 0);
				if ((st & 0x7f) != 0 && (st & 0x7f) != 0x7f)
					die(128 + (st & 0x7f));
				die((st >> 8) & 0xff);
			}
		}
		sig = sys(NR_rt_sigtimedwait, (long)&all, 0, 0, sizeof(all));
		if (sig > 0 && sig < 64 && sig != SIGCHLD && ((forward >> sig) & 1))
			sys(NR_kill, plugin, sig, 0, 0);
	}
}
