/* Records which pages of a program's code run, for scripts/hot-text-order.
 *
 * Loaded with LD_PRELOAD: before main, it makes the executable's text unreadable and catches
 * the SIGSEGV each first touch of a page raises, giving that page back its rights. Afterwards
 * /proc/PID/maps shows the pages that ran as r-x, the rest as ---. lit-mux's vfork child resets
 * every caught signal to its default before exec, still running lit-mux's code (on pages nobody
 * may have run yet), at first with every signal blocked, so a fault there kills it: the pages of
 * the functions TRAP_TEXT_KEEP names (file offsets "start-end,...") stay executable, and calls
 * to sigaction that would take SIGSEGV from the handler are ignored. LD_PRELOAD is dropped from
 * the environment so that lit-mux's own children run untrapped.
 * Not part of lit-mux: only the script builds it. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
static unsigned long lo, hi, lo_offset;
static int (*real_sigaction)(int, const struct sigaction *, struct sigaction *);

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig == SIGSEGV && act && lo) {
        if (old) real_sigaction(sig, 0, old);
        return 0;
    }
    return real_sigaction(sig, act, old);
}
static void on_segv(int sig, siginfo_t *si, void *uc) {
    unsigned long a = (unsigned long)si->si_addr;
    if (a >= lo && a < hi) { mprotect((void *)(a & ~4095UL), 4096, PROT_READ | PROT_EXEC); return; }
    struct sigaction dfl = {0};
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, 0);
}
__attribute__((constructor)) static void trap_exe(void) {
    real_sigaction = (int (*)(int, const struct sigaction *, struct sigaction *))dlsym(RTLD_NEXT, "sigaction");
    char exe[4096]; ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return;
    exe[n] = 0;
    FILE *f = fopen("/proc/self/maps", "r"); if (!f) return;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        unsigned long a, b; char perm[8], path[4096] = "";
        unsigned long offset;
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %4095s", &a, &b, perm, &offset, path) >= 4 && strcmp(path, exe) == 0 && perm[2] == 'x') { lo = a; hi = b; lo_offset = offset; }
    }
    fclose(f);
    if (!lo) return;
    unsetenv("LD_PRELOAD");
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv; sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    real_sigaction(SIGSEGV, &sa, 0);
    mprotect((void *)lo, hi - lo, PROT_NONE);
    const char *keep = getenv("TRAP_TEXT_KEEP");
    while (keep && *keep) {
        char *end;
        unsigned long from = strtoul(keep, &end, 16), to = from;
        if (*end == '-') to = strtoul(end + 1, &end, 16);
        unsigned long start = (lo + from - lo_offset) & ~4095UL, stop = lo + to - lo_offset;
        if (start >= lo && stop <= hi && stop > start) mprotect((void *)start, stop - start, PROT_READ | PROT_EXEC);
        keep = *end == ',' ? end + 1 : end;
        if (end == keep && *end) break;
    }
}
