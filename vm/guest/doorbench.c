/*
 * doorbench: the guest-side helper of the doorflow-agent VM bench (README.md, "The VM bench").
 *
 * It plays a card reader and a keypad on gpio-sim lines, samples the relay line the agent
 * drives, and relays the agent's acknowledgement stream to the host. Independent of the
 * agent's own encoders on purpose: the frames below are built from the published HID layouts,
 * so a bench pass is not the agent agreeing with itself.
 *
 *   doorbench card FORMAT FACILITY NUMBER        print the frame's bits (h10301, h10306, h10304)
 *   doorbench key KEYS                           print 4-bit keypad bursts, one per key
 *   doorbench send [OPTIONS] D0_DIR D1_DIR TOKEN...
 *       D0_DIR/D1_DIR: the gpio-sim line directories (.../sim_gpioN). Tokens, in order:
 *         0101...        bits: a low pulse on D0 (0) or D1 (1) every --period-us
 *         gap:MS         silence
 *         glitch:D0|D1:US  one extra low pulse US microseconds after the previous bit's start
 *         both           both lines low at once (a wiring fault)
 *       --width-us N (50) --period-us N (2000)
 *       --relay DIR --expect 0|1 --watch-ms N: after the last token, sample the relay line's
 *         `value` every --sample-us (200) for N ms and print every change with its time
 *         after the last falling edge:  change t_us=31250 value=1
 *       Always prints last_edge_ns=... (CLOCK_MONOTONIC of the last falling edge).
 *   doorbench sample DIR MS [PERIOD_US]          print the line's changes for MS ms
 *   doorbench pull DIR up|down                   set one input line's pull
 *   doorbench watch-events SOCKET [OUT]
 *       connects to the agent's admin socket, asks for `watch_events` and copies each line to
 *       OUT (default stdout). When OUT is a tty (the host-captured serial port), each line is
 *       drained (tcdrain) before the next is read, so a line the host has not received was
 *       never reported as received. Prints `watching` on stderr once subscribed.
 *
 * Pulses are timed with clock_nanosleep(TIMER_ABSTIME) on CLOCK_MONOTONIC, the clock the
 * kernel stamps GPIO edge events with. No real-time priority: on one vCPU SCHED_FIFO would
 * starve the agent's event reader.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "doorbench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t ns)
{
    struct timespec ts = {.tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---- frames ---------------------------------------------------------------------------- */

/* HID layouts (inclusive bit indexes, bit 0 first on the wire): even parity over `even` plus
 * bit 0, odd parity over `odd` plus the last bit. H10301: 26 bits, facility 8, number 16.
 * H10306: 34 bits, facility 16, number 16. H10304: 37 bits, facility 16, number 19, parity
 * ranges overlapping at bit 18. */
struct layout {
    const char *name;
    int bits, even_from, even_to, odd_from, odd_to, fac_from, fac_to, num_from, num_to;
};
static const struct layout LAYOUTS[] = {
    {"h10301", 26, 1, 12, 13, 24, 1, 8, 9, 24},
    {"h10306", 34, 1, 16, 17, 32, 1, 16, 17, 32},
    {"h10304", 37, 1, 18, 18, 35, 1, 16, 17, 35},
};

static void put_field(char *bits, int from, int to, uint64_t value)
{
    for (int i = to; i >= from; i--, value >>= 1)
        bits[i] = (value & 1) ? '1' : '0';
    if (value)
        die("%s: value does not fit its field", "card");
}

static int ones(const char *bits, int from, int to)
{
    int n = 0;
    for (int i = from; i <= to; i++)
        n += bits[i] == '1';
    return n;
}

static int cmd_card(int argc, char **argv)
{
    if (argc != 4)
        die("%s", "usage: doorbench card FORMAT FACILITY NUMBER");
    for (size_t i = 0; i < sizeof LAYOUTS / sizeof *LAYOUTS; i++) {
        const struct layout *l = &LAYOUTS[i];
        if (strcmp(argv[1], l->name))
            continue;
        char bits[64];
        memset(bits, '0', l->bits);
        bits[l->bits] = 0;
        put_field(bits, l->fac_from, l->fac_to, strtoull(argv[2], NULL, 10));
        put_field(bits, l->num_from, l->num_to, strtoull(argv[3], NULL, 10));
        bits[0] = (ones(bits, l->even_from, l->even_to) % 2) ? '1' : '0';
        bits[l->bits - 1] = (ones(bits, l->odd_from, l->odd_to) % 2) ? '0' : '1';
        puts(bits);
        return 0;
    }
    die("unknown format %s (h10301, h10306, h10304)", argv[1]);
    return 2;
}

/* 4-bit keypad bursts: the key code MSB first; '*' is 10, '#' is 11. */
static int cmd_key(int argc, char **argv)
{
    if (argc != 2)
        die("%s", "usage: doorbench key KEYS");
    for (const char *k = argv[1]; *k; k++) {
        int code = *k == '*' ? 10 : *k == '#' ? 11 : (*k >= '0' && *k <= '9') ? *k - '0' : -1;
        if (code < 0)
            die("`%s` holds a character that is not a keypad key", argv[1]);
        printf("%s%c%c%c%c", k == argv[1] ? "" : " ", '0' + ((code >> 3) & 1), '0' + ((code >> 2) & 1),
               '0' + ((code >> 1) & 1), '0' + (code & 1));
    }
    putchar('\n');
    return 0;
}

/* ---- lines ----------------------------------------------------------------------------- */

static int open_attr(const char *dir, const char *attr, int flags)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, attr);
    int fd = open(path, flags | O_CLOEXEC);
    if (fd < 0)
        die("cannot open %s", path);
    return fd;
}

/* A Wiegand line idles high: a low pulse is `pull-down` then `pull-up`. */
static void set_pull(int fd, int high)
{
    const char *text = high ? "pull-up" : "pull-down";
    if (pwrite(fd, text, strlen(text), 0) < 0)
        die("%s", "writing a pull attribute failed");
}

static int read_value(int fd)
{
    char c = 0;
    if (pread(fd, &c, 1, 0) != 1)
        die("%s", "reading a value attribute failed");
    return c == '1';
}

struct sampler {
    int fd, last;
    uint64_t origin;
};

static void sample_for(struct sampler *s, uint64_t until_ns, uint64_t period_ns)
{
    for (uint64_t at = now_ns(); at < until_ns; at += period_ns) {
        sleep_until(at);
        int value = read_value(s->fd);
        if (value != s->last) {
            uint64_t t = now_ns();
            printf("change t_us=%lld value=%d\n", (long long)((int64_t)(t - s->origin) / 1000), value);
            fflush(stdout);
            s->last = value;
        }
    }
}

static int cmd_send(int argc, char **argv)
{
    uint64_t width = 50000, period = 2000000, sample = 200000, watch_ms = 0;
    const char *relay = NULL;
    int i = 1;
    for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (i + 1 >= argc)
            die("%s needs a value", argv[i]);
        uint64_t v = strtoull(argv[i + 1], NULL, 10);
        if (!strcmp(argv[i], "--width-us"))
            width = v * 1000;
        else if (!strcmp(argv[i], "--period-us"))
            period = v * 1000;
        else if (!strcmp(argv[i], "--sample-us"))
            sample = v * 1000;
        else if (!strcmp(argv[i], "--watch-ms"))
            watch_ms = v;
        else if (!strcmp(argv[i], "--relay"))
            relay = argv[i + 1];
        else
            die("unknown option %s", argv[i]);
    }
    if (argc - i < 3)
        die("%s", "usage: doorbench send [OPTIONS] D0_DIR D1_DIR TOKEN...");
    int line[2] = {open_attr(argv[i], "pull", O_WRONLY), open_attr(argv[i + 1], "pull", O_WRONLY)};
    struct sampler s = {.fd = relay ? open_attr(relay, "value", O_RDONLY) : -1};
    if (relay)
        s.last = read_value(s.fd);
    set_pull(line[0], 1);
    set_pull(line[1], 1);
    uint64_t at = now_ns() + 1000000, last_fall = 0;
    for (i += 2; i < argc; i++) {
        const char *t = argv[i];
        if (!strncmp(t, "gap:", 4)) {
            at += strtoull(t + 4, NULL, 10) * 1000000;
        } else if (!strncmp(t, "glitch:", 7)) {
            int which = !strncmp(t + 7, "D1", 2);
            const char *us = strchr(t + 7, ':');
            if (!us)
                die("bad token %s (glitch:D0|D1:US)", t);
            uint64_t when = last_fall + strtoull(us + 1, NULL, 10) * 1000;
            sleep_until(when);
            set_pull(line[which], 0);
            last_fall = now_ns();
            sleep_until(when + width);
            set_pull(line[which], 1);
        } else if (!strcmp(t, "both")) {
            sleep_until(at);
            set_pull(line[0], 0);
            set_pull(line[1], 0);
            last_fall = now_ns();
            sleep_until(at + width);
            set_pull(line[0], 1);
            set_pull(line[1], 1);
            at += period;
        } else {
            for (const char *b = t; *b; b++) {
                if (*b != '0' && *b != '1')
                    die("bad token %s (bits, gap:MS, glitch:D0|D1:US or both)", t);
                int which = *b == '1';
                sleep_until(at);
                set_pull(line[which], 0);
                last_fall = now_ns();
                sleep_until(at + width);
                set_pull(line[which], 1);
                at += period;
            }
        }
    }
    printf("last_edge_ns=%llu\n", (unsigned long long)last_fall);
    fflush(stdout);
    if (relay) {
        s.origin = last_fall;
        sample_for(&s, now_ns() + watch_ms * 1000000, sample);
    }
    return 0;
}

static int cmd_sample(int argc, char **argv)
{
    if (argc < 3)
        die("%s", "usage: doorbench sample DIR MS [PERIOD_US]");
    struct sampler s = {.fd = open_attr(argv[1], "value", O_RDONLY), .origin = now_ns()};
    s.last = read_value(s.fd);
    printf("value=%d\n", s.last);
    fflush(stdout);
    uint64_t period = argc > 3 ? strtoull(argv[3], NULL, 10) * 1000 : 1000000;
    sample_for(&s, s.origin + strtoull(argv[2], NULL, 10) * 1000000, period);
    return 0;
}

static int cmd_pull(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[2], "up") && strcmp(argv[2], "down")))
        die("%s", "usage: doorbench pull DIR up|down");
    set_pull(open_attr(argv[1], "pull", O_WRONLY), !strcmp(argv[2], "up"));
    return 0;
}

/* ---- acknowledgements ------------------------------------------------------------------ */

static int cmd_watch_events(int argc, char **argv)
{
    if (argc < 2)
        die("%s", "usage: doorbench watch-events SOCKET [OUT]");
    int out = argc > 2 ? open(argv[2], O_WRONLY | O_NOCTTY | O_CLOEXEC) : 1;
    if (out < 0)
        die("cannot open %s", argv[2]);
    int tty = isatty(out);
    if (tty) {
        struct termios t;
        if (tcgetattr(out, &t) == 0) {
            cfmakeraw(&t);
            tcsetattr(out, TCSANOW, &t);
        }
    }
    int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    snprintf(addr.sun_path, sizeof addr.sun_path, "%s", argv[1]);
    if (sock < 0 || connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
        die("cannot connect to %s", argv[1]);
    const char *request = "{\"op\":\"watch_events\"}\n";
    if (write(sock, request, strlen(request)) < 0)
        die("%s", "cannot send the watch request");
    FILE *in = fdopen(sock, "r");
    char *text = NULL;
    size_t size = 0;
    ssize_t len;
    int first = 1;
    while ((len = getline(&text, &size, in)) > 0) {
        if (first) {
            first = 0;
            fprintf(stderr, "watching\n");
            continue;
        }
        for (ssize_t done = 0; done < len;) {
            ssize_t n = write(out, text + done, len - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0)
                die("%s", "writing an acknowledgement failed");
            done += n;
        }
        if (tty)
            tcdrain(out);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("%s", "usage: doorbench card|key|send|sample|pull|watch-events ...");
    const char *cmd = argv[1];
    argc--, argv++;
    if (!strcmp(cmd, "card"))
        return cmd_card(argc, argv);
    if (!strcmp(cmd, "key"))
        return cmd_key(argc, argv);
    if (!strcmp(cmd, "send"))
        return cmd_send(argc, argv);
    if (!strcmp(cmd, "sample"))
        return cmd_sample(argc, argv);
    if (!strcmp(cmd, "pull"))
        return cmd_pull(argc, argv);
    if (!strcmp(cmd, "watch-events"))
        return cmd_watch_events(argc, argv);
    die("unknown command %s", cmd);
    return 2;
}
