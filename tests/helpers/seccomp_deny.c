/* Runs a command under a seccomp filter that answers EPERM to the named
 * clock system calls, as systemd's ProtectClock=yes (or a unit's
 * SystemCallFilter) does, optionally in a private mount namespace whose
 * /run/systemd is a fresh tmpfs: empty, or holding systemd-timesyncd's
 * "synchronized" flag file.
 *
 *   seccomp_deny [--run-systemd=empty|synchronized] NAME[,NAME...] -- CMD ARGS...
 *
 * NAME is one of adjtimex, clock_adjtime, clock_settime, settimeofday, or
 * "none". Built by tests/clock.rs with the system's C compiler; a test
 * helper, not part of nearcast. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH"
#endif

static const struct { const char *name; long nr; } calls[] = {
    {"adjtimex", __NR_adjtimex},
    {"clock_adjtime", __NR_clock_adjtime},
    {"clock_settime", __NR_clock_settime},
    {"settimeofday", __NR_settimeofday},
};

static void die(const char *what) {
    perror(what);
    exit(125);
}

static void private_run_systemd(int synchronized) {
    if (unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) die("mount --make-rprivate /");
    mkdir("/run/systemd", 0755);
    if (mount("tmpfs", "/run/systemd", "tmpfs", 0, "mode=0755") != 0) die("mount tmpfs /run/systemd");
    if (synchronized) {
        if (mkdir("/run/systemd/timesync", 0755) != 0) die("mkdir /run/systemd/timesync");
        int fd = open("/run/systemd/timesync/synchronized", O_CREAT | O_WRONLY, 0644);
        if (fd < 0) die("create /run/systemd/timesync/synchronized");
        close(fd);
    }
}

int main(int argc, char **argv) {
    int i = 1;
    if (i < argc && strncmp(argv[i], "--run-systemd=", 14) == 0) {
        const char *v = argv[i] + 14;
        if (strcmp(v, "empty") == 0) private_run_systemd(0);
        else if (strcmp(v, "synchronized") == 0) private_run_systemd(1);
        else { fprintf(stderr, "bad --run-systemd=%s\n", v); return 125; }
        i++;
    }
    if (i + 2 >= argc || strcmp(argv[i + 1], "--") != 0) {
        fprintf(stderr, "usage: %s [--run-systemd=empty|synchronized] NAME[,NAME...] -- CMD ARGS...\n", argv[0]);
        return 125;
    }
    struct sock_filter f[4 + 2 * 8];
    int n = 0;
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
    f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, ARCH, 1, 0);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    f[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
    char *names = strdup(argv[i]);
    for (char *tok = strtok(names, ","); tok; tok = strtok(NULL, ",")) {
        if (strcmp(tok, "none") == 0) continue;
        size_t k = 0;
        while (k < sizeof calls / sizeof calls[0] && strcmp(calls[k].name, tok) != 0) k++;
        if (k == sizeof calls / sizeof calls[0] || n + 2 > (int)(sizeof f / sizeof f[0]) - 1) {
            fprintf(stderr, "unknown or too many system calls: %s\n", tok);
            return 125;
        }
        f[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, calls[k].nr, 0, 1);
        f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA));
    }
    f[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog prog = {.len = (unsigned short)n, .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("prctl(NO_NEW_PRIVS)");
    if (syscall(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) die("seccomp");
    execvp(argv[i + 2], argv + i + 2);
    die("exec");
    return 125;
}
