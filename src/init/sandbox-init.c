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

__attribute__((noreturn, used)) void start_c(long *sp)
{
	long argc = sp[0];
	char **argv = (char **)(sp + 1);
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
	if (sys(NR_rt_sigprocmask, SIG_SETMASK, (long)&all, 0, sizeof(all)) != 0)
		die(125);
	for (sig = 1; sig <= 64; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sys(NR_rt_sigaction, sig, (long)&dfl, 0, sizeof(all));
	/* Let the plugin go on. If it is gone already, its SIGCHLD is pending and reaped below. */
	sys(NR_write, go_fd, (long)"1", 1, 0);
	sys(NR_close, go_fd, 0, 0, 0);
	for (;;) {
		sig = sys(NR_rt_sigtimedwait, (long)&all, 0, 0, sizeof(all));
		if (sig == SIGCHLD) {
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
		} else if (sig > 0 && sig < 64 && ((forward >> sig) & 1)) {
			sys(NR_kill, plugin, sig, 0, 0);
		}
	}
}
