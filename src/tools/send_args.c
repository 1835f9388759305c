/* Every flag of Wallaroo 0.6.1's giles sender (giles/sender/giles-sender.pony)
 * is taken with giles' meaning; the combinations in which giles would ignore a
 * flag are refused, so that no flag is accepted without effect. */
#include "tools/send_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stream/eoproto.h"
#include "tools/batch.h"
#include "tools/cli.h"
#include "tools/send_args.h"

#define PROG SEND_PROG
/* giles' --u64 record: a 4-byte length, the 8-byte value, the partition. */
#define U64_RECORD 12

enum {
    OPT_TO,
    OPT_FILE,
    OPT_POSITIONAL,
    OPT_FRAMED,
    OPT_REPEAT,
    OPT_COUNT,
    OPT_MESSAGES,
    OPT_RATE,
    OPT_BATCH_SIZE,
    OPT_INTERVAL,
    OPT_VARY_BY,
    OPT_U64,
    OPT_START_FROM,
    OPT_PARTITION,
    OPT_MSG_SIZE,
    OPT_VARIABLE_SIZE,
    OPT_NO_WRITE,
    OPT_SENT_LOG,
    OPT_CTIMEOUT,
    OPT_RESUMABLE,
    OPT_STREAM,
    OPT_ACK_TIMEOUT,
    OPT_HELP
};

static const cli_option_t send_options[] = {
    {OPT_TO, CLI_VALUE, {"--to", "--host", "-h"}},
    {OPT_FILE, CLI_VALUE, {"--file", "-f"}},
    {OPT_FRAMED, CLI_FLAG, {"--framed", "--binary", "-y"}},
    {OPT_REPEAT, CLI_OPTIONAL_COUNT, {"--repeat", "-r"}},
    {OPT_COUNT, CLI_VALUE, {"--count"}},
    {OPT_MESSAGES, CLI_VALUE, {"--messages", "-m"}},
    {OPT_RATE, CLI_VALUE, {"--rate"}},
    {OPT_BATCH_SIZE, CLI_VALUE, {"--batch-size", "-s"}},
    {OPT_INTERVAL, CLI_VALUE, {"--interval", "-i"}},
    {OPT_VARY_BY, CLI_VALUE, {"--vary-by", "-j"}},
    {OPT_U64, CLI_FLAG, {"--u64", "-u"}},
    {OPT_START_FROM, CLI_VALUE, {"--start-from", "-v"}},
    {OPT_PARTITION, CLI_VALUE, {"--partition", "-p"}},
    {OPT_MSG_SIZE, CLI_VALUE, {"--msg-size", "-g"}},
    {OPT_VARIABLE_SIZE, CLI_FLAG, {"--variable-size", "-z"}},
    {OPT_NO_WRITE, CLI_FLAG, {"--no-write", "-w"}},
    {OPT_SENT_LOG, CLI_VALUE, {"--sent-log"}},
    {OPT_CTIMEOUT, CLI_VALUE, {"--connect-timeout"}},
    {OPT_RESUMABLE, CLI_FLAG, {"--resumable"}},
    {OPT_STREAM, CLI_VALUE, {"--stream"}},
    {OPT_ACK_TIMEOUT, CLI_VALUE, {"--ack-timeout"}},
    {OPT_HELP, CLI_FLAG, {"--help"}},
};

static void usage(FILE *f)
{
    fprintf(f,
"usage: bettong send --to HOST:PORT [options] [--file] FILE[,FILE...]\n"
"       bettong send --to HOST:PORT --messages N [--u64] [options]\n"
"\n"
"Send records to a TCP address, each framed with a 4-byte big-endian length:\n"
"the lines of FILE, an already framed FILE, or one of giles' counter sequences.\n"
"Wallaroo's giles sender command lines work as they are (see the giles flags).\n"
"\n"
"  --to, --host, -h H:P      destination (a bare PORT means 127.0.0.1:PORT)\n"
"  --file, -f F[,F2...]      input files, read one after the other; '-' alone\n"
"                            reads stdin. Text: one record per line, without the\n"
"                            newline (and a '\\r' before it); empty lines are skipped\n"
"  --framed, --binary, -y    the file is already length-framed: send its frames\n"
"  --repeat, -r [N]          go through the files N times (default 1); 0 or no\n"
"                            number: forever (or until --count / --messages)\n"
"  --count N                 stop after N records in total (0: no limit)\n"
"  --messages, -m N          stop after N records (0: send none), as giles\n"
"  --rate R                  records per second (0: as fast as possible)\n"
"  --sent-log FILE           log every record sent as '<wall-clock ns>, <payload>'\n"
"                            (giles' sent.txt; never written unless asked)\n"
"  --connect-timeout S       keep retrying the connection for S seconds (default 10)\n"
"  --resumable               speak the resumable source protocol (docs/resilience.md):\n"
"                            resend from where the engine says after a reconnect,\n"
"                            reconnecting with backoff; exit 2 if the engine refuses\n"
"  --stream NAME             the stream's name with --resumable (default: FILE's\n"
"                            basename, or 'stdin')\n"
"  --ack-timeout S           with --resumable, wait up to S seconds at the end for\n"
"                            every record to be acknowledged (default 30; 0: don't\n"
"                            wait); exit 1 if they are not\n"
"  --help                    this text\n"
"\n"
"giles (Wallaroo 0.6.1) flags, with giles' meaning; numbers may be written\n"
"100_000_000 or 0x..:\n"
"  --batch-size, -s N        N records per batch (default 500 once batching)\n"
"  --interval, -i NS         a batch every NS nanoseconds (default 5_000_000), the\n"
"                            first at once; like giles' Pony timer, NS is rounded\n"
"                            down to a multiple of 1048576 (at least one)\n"
"  --vary-by, -j N           every 1001 batches, add a random 0..N-1 to the batch\n"
"                            size. Without these three: no batches (--rate, or\n"
"                            as fast as the receiver reads)\n"
"  --binary --msg-size, -g N the file is cut in N-byte records sent as they are\n"
"                            (N includes the file's own 4-byte headers)\n"
"  --binary --variable-size, -z\n"
"                            the file's frames, empty ones skipped\n"
"  (no file) --messages N    the counter start-from+1, +2, ... as decimal text\n"
"  --u64, -u                 ... as giles' u64 records instead: a 4-byte length\n"
"                            (8 + the partition's), the value as 8 big-endian\n"
"                            bytes, the partition; with --binary --msg-size 12\n"
"                            (12 + the partition's length) sent as they are,\n"
"                            otherwise framed once more, exactly as giles does\n"
"  --start-from, -v N        the counter's start (default 0: the first value is 1)\n"
"  --partition, -p S         appended to every --u64 record\n"
"  --no-write, -w            do not write giles' sent.txt (bettong never does\n"
"                            unless --sent-log is given)\n"
"  --ponythreads N, --ponynoblock, --ponypinasio, ... (the Pony runtime's flags)\n"
"                            ignored, with a note\n"
"\n"
"Prints '" PROG ": sent N records (B bytes) in T s, R records/s' at the end\n"
"('too short to measure a rate' under 1 ms; with --resumable, every record put on\n"
"the wire, resends included), and with --resumable '" PROG ": acknowledged N\n"
"records'.\n");
}

static int bad_usage(const char *msg)
{
    fprintf(stderr, PROG ": %s\n\n", msg);
    usage(stderr);
    return 2;
}

void send_opts_free(send_opts_t *o)
{
    if (o->paths && o->npaths)
        free(o->paths[0]); /* one copy of the list, cut at the commas */
    free(o->paths);
    o->paths = NULL;
    o->npaths = 0;
}

/* giles' --file takes "F1,F2,...": the files are read one after the other. */
static int set_files(send_opts_t *o, const char *v, int split, char *err, size_t errlen)
{
    if (o->file) {
        snprintf(err, errlen, "more than one input file given");
        return -1;
    }
    o->file = v;
    size_t n = 1;
    for (const char *p = v; split && *p; p++)
        n += *p == ',';
    char *copy = strdup(v);
    o->paths = calloc(n, sizeof *o->paths);
    if (!copy || !o->paths) {
        free(copy);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    o->npaths = n;
    o->paths[0] = copy;
    for (size_t i = 1; i < n; i++) {
        char *comma = strchr(o->paths[i - 1], ',');
        *comma = '\0';
        o->paths[i] = comma + 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (o->paths[i][0] == '\0') {
            snprintf(err, errlen, "an empty file name in --file '%s'", v);
            return -1;
        }
        if (n > 1 && strcmp(o->paths[i], "-") == 0) {
            snprintf(err, errlen, "'-' (stdin) cannot be one of several files ('%s')", v);
            return -1;
        }
    }
    return 0;
}

/* A count in giles' notation, for giles' flags. */
static int giles_count(const char *flag, const char *v, uint64_t *out, char *err, size_t errlen)
{
    if (cli_parse_pony_count(v, out) == 0)
        return 0;
    snprintf(err, errlen, "bad %s '%s' (expected a count: 1000, 1_000 or 0x3e8)", flag, v);
    return -1;
}

static int apply_counts(send_opts_t *o, int id, const char *v, char *err, size_t errlen)
{
    switch (id) {
    case OPT_REPEAT:
        o->have_repeat = 1;
        o->repeat = 0;
        if (v && cli_parse_u64(v, &o->repeat) < 0) {
            snprintf(err, errlen, "bad --repeat '%s' (expected a count)", v);
            return -1;
        }
        return 0;
    case OPT_COUNT:
        o->have_limit = 1;
        if (cli_parse_u64(v, &o->limit) < 0) {
            snprintf(err, errlen, "bad --count '%s' (expected a count)", v);
            return -1;
        }
        if (o->limit == 0)
            o->limit = UINT64_MAX;
        return 0;
    case OPT_MESSAGES:
        o->have_limit = 1;
        return giles_count("--messages", v, &o->limit, err, errlen);
    case OPT_BATCH_SIZE:
        o->have_batch_size = 1;
        return giles_count("--batch-size", v, &o->batch_size, err, errlen);
    case OPT_INTERVAL:
        o->have_interval = 1;
        return giles_count("--interval", v, &o->interval, err, errlen);
    case OPT_VARY_BY:
        o->have_vary_by = 1;
        return giles_count("--vary-by", v, &o->vary_by, err, errlen);
    case OPT_START_FROM:
        o->have_start_from = 1;
        return giles_count("--start-from", v, &o->start_from, err, errlen);
    case OPT_MSG_SIZE:
        if (giles_count("--msg-size", v, &o->msg_size, err, errlen) < 0)
            return -1;
        if (o->msg_size > 0)
            return 0;
        snprintf(err, errlen, "--msg-size 0 would send empty records for ever (giles "
                 "too); give the size of one record");
        return -1;
    }
    return 1; /* not a count */
}

static int apply_seconds(const char *flag, const char *v, double *out, char *err, size_t errlen)
{
    if (cli_parse_nonneg(v, out) == 0 && *out < 1e7)
        return 0;
    snprintf(err, errlen, "bad %s '%s' (expected seconds)", flag, v);
    return -1;
}

/* Apply one parsed option. Returns 0, or -1 with a message in err. */
static int apply_option(send_opts_t *o, int id, const char *v, char *err, size_t errlen)
{
    int rc = apply_counts(o, id, v, err, errlen);
    if (rc <= 0)
        return rc;
    switch (id) {
    case OPT_TO:
        o->have_to = 1;
        return cli_parse_hostport(v, &o->to, err, errlen);
    case OPT_FILE:
    case OPT_POSITIONAL:
        return set_files(o, v, id == OPT_FILE, err, errlen);
    case OPT_FRAMED:
        o->binary = 1;
        return 0;
    case OPT_RATE:
        if (cli_parse_nonneg(v, &o->rate) == 0)
            return 0;
        snprintf(err, errlen, "bad --rate '%s' (expected records per second)", v);
        return -1;
    case OPT_U64:
        o->u64 = 1;
        return 0;
    case OPT_PARTITION:
        o->partition = v;
        return 0;
    case OPT_VARIABLE_SIZE:
        o->variable_size = 1;
        return 0;
    case OPT_NO_WRITE:
        o->no_write = 1;
        return 0;
    case OPT_SENT_LOG:
        o->sent_log = v;
        return 0;
    case OPT_CTIMEOUT:
        return apply_seconds("--connect-timeout", v, &o->connect_timeout, err, errlen);
    case OPT_RESUMABLE:
        o->resumable = 1;
        return 0;
    case OPT_STREAM:
        o->have_stream = 1;
        o->stream = v;
        if (strlen(v) >= 1 && strlen(v) <= RS_NAME_MAX)
            return 0;
        snprintf(err, errlen, "bad --stream '%s' (1 to %d bytes)", v, RS_NAME_MAX);
        return -1;
    case OPT_ACK_TIMEOUT:
        o->have_ack_timeout = 1;
        return apply_seconds("--ack-timeout", v, &o->ack_timeout, err, errlen);
    }
    snprintf(err, errlen, "internal error: option %d", id);
    return -1;
}

int send_batched(const send_opts_t *o)
{
    return o->have_batch_size || o->have_interval || o->have_vary_by;
}

/* The binary flags: giles' rules, and no flag that giles would ignore. */
static const char *check_binary(const send_opts_t *o)
{
    if (o->msg_size && o->variable_size)
        return "--msg-size and --variable-size can't be used together (as in giles)";
    if ((o->msg_size || o->variable_size) && !o->binary)
        return "--msg-size and --variable-size describe a --binary input: add --binary "
               "(giles would ignore them and send text lines)";
    return NULL;
}

/* giles' sequences (no file): what giles would send, or refuse. */
static const char *check_sequence(const send_opts_t *o, char *msg, size_t len)
{
    if (o->resumable)
        return "--resumable needs an input file";
    if (!o->have_limit)
        return "missing input file (--file FILE, or '-' for stdin), or --messages N for "
               "giles' counter sequence (--count 0: without end)";
    if (o->have_repeat)
        return "--repeat goes through a file again; giles' counter sequences never end "
               "(--messages says how many)";
    if (o->binary && !o->msg_size && !o->variable_size)
        return "--binary requires either --msg-size or --variable-size (as in giles)";
    if (o->binary && o->msg_size && !o->u64)
        return "--binary --msg-size without --file and --u64 would send giles' decimal "
               "counter values back to back with no framing at all; refused";
    size_t plen = o->partition ? strlen(o->partition) : 0;
    if (o->binary && o->msg_size && o->msg_size != U64_RECORD + plen) {
        snprintf(msg, len, "with --u64 every record is %zu bytes (12 + the partition's "
                 "length), which giles sends whatever --msg-size says: give --msg-size %zu",
                 U64_RECORD + plen, U64_RECORD + plen);
        return msg;
    }
    return NULL;
}

/* A file: the sequence flags would be ignored by giles, so they are refused. */
static const char *check_file(const send_opts_t *o)
{
    if (o->u64)
        return "--u64 makes giles' sequence instead of reading a file (giles ignores it "
               "when --file is given): give one of them";
    if (o->have_start_from)
        return "--start-from starts giles' counter sequence, which a file replaces "
               "(giles ignores it then): drop one of them";
    if (o->resumable && o->npaths > 1 && !o->have_stream)
        return "--resumable with several files needs --stream NAME";
    return NULL;
}

static const char *check_pacing(const send_opts_t *o)
{
    if (o->partition && !o->u64)
        return "--partition is appended to --u64 records only (giles ignores it otherwise)";
    if (send_batched(o) && o->rate > 0)
        return "--rate and giles' --batch-size / --interval / --vary-by both pace the "
               "sender: give one or the other";
    if (o->have_batch_size && o->batch_size == 0)
        return "--batch-size 0 sends nothing (giles stops at once): give at least 1";
    if (o->have_interval && o->interval == 0)
        return "--interval 0 does not repeat in giles (a Pony timer with no interval); "
               "give at least 1 (it is rounded to multiples of 1048576 ns)";
    if (o->no_write && o->sent_log)
        return "--no-write and --sent-log contradict each other";
    if (o->resumable && (send_batched(o) || o->sent_log))
        return "--resumable paces with --rate only, and has no --sent-log";
    if ((o->have_stream || o->have_ack_timeout) && !o->resumable)
        return "--stream and --ack-timeout need --resumable";
    return NULL;
}

static void print_notes(const send_opts_t *o, const cli_t *c)
{
    cli_pony_note(c->pony_seen, PROG);
    if (!o->file && o->u64 && (!o->binary || o->variable_size))
        fprintf(stderr, PROG ": note: giles' --u64 records carry their own 4-byte length and "
                        "get another one%s, as giles sends them (--binary --msg-size %zu "
                        "sends the records alone)\n",
                o->binary ? " with --variable-size" : " without --binary",
                U64_RECORD + (o->partition ? strlen(o->partition) : 0));
}

static int validate(send_opts_t *o, const cli_t *c)
{
    char msg[512];
    const char *bad = NULL;
    if (!o->have_to)
        bad = "missing --to HOST:PORT (giles: --host)";
    if (!bad)
        bad = check_binary(o);
    if (!bad)
        bad = o->file ? check_file(o) : check_sequence(o, msg, sizeof msg);
    if (!bad)
        bad = check_pacing(o);
    if (bad)
        return bad_usage(bad);
    if (send_batched(o)) {
        if (!o->have_batch_size)
            o->batch_size = BATCH_DEFAULT_SIZE;
        if (!o->have_interval)
            o->interval = BATCH_DEFAULT_INTERVAL;
    }
    print_notes(o, c);
    return -1;
}

int send_parse_args(int argc, char **argv, send_opts_t *o)
{
    memset(o, 0, sizeof *o);
    o->repeat = 1;
    o->limit = UINT64_MAX;
    o->connect_timeout = 10;
    o->ack_timeout = 30;
    cli_t c;
    cli_init(&c, argc, argv);
    cli_accept_pony_flags(&c);
    char err[512];
    int id = -1;
    const char *v;
    cli_status st;
    while ((st = cli_next(&c, send_options, sizeof send_options / sizeof send_options[0], &id,
                          &v, err, sizeof err)) != CLI_END) {
        if (st == CLI_ERROR)
            return bad_usage(err);
        if (st == CLI_OPTION && id == OPT_HELP) {
            usage(stdout);
            return 0;
        }
        if (st == CLI_POSITIONAL)
            id = OPT_POSITIONAL;
        if (apply_option(o, id, v, err, sizeof err) < 0)
            return bad_usage(err);
    }
    return validate(o, &c);
}
