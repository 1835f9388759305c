#include "stream/stopology.h"

#include <stdio.h>
#include <string.h>

#include "stream/routing.h"

static int put(buf_t *out, const char *s) { return buf_append(out, s, strlen(s)); }

int stopology_json_string(buf_t *out, const char *s)
{
    if (put(out, "\"") < 0)
        return -1;
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        char esc[8];
        if (*p == '"' || *p == '\\')
            snprintf(esc, sizeof esc, "\\%c", *p);
        else if (*p < 0x20)
            snprintf(esc, sizeof esc, "\\u%04x", *p);
        else {
            if (buf_append(out, p, 1) < 0)
                return -1;
            continue;
        }
        if (put(out, esc) < 0)
            return -1;
    }
    return put(out, "\"");
}

static const char *step_kind_name(step_kind k)
{
    switch (k) {
    case STEP_STATELESS: return "stateless";
    case STEP_STATEFUL: return "state";
    case STEP_PARTITION: return "state_partition";
    case STEP_PARTITION_U64: return "state_partition_u64";
    case STEP_KEY_BY: return "key_by";
    case STEP_KEYED_STATE: return "keyed_state";
    case STEP_WINDOW: return "window";
    }
    return "?";
}

static int put_addr(buf_t *out, const char *host, int port)
{
    char text[300];
    snprintf(text, sizeof text, "%s:%d", host, port);
    return stopology_json_string(out, text);
}

static int put_source(buf_t *out, const stopology_t *t, size_t i)
{
    const source_t *s = &t->app->pipes[i].source;
    if (s->kind == SOURCE_GEN)
        return put(out, "{\"kind\":\"generator\"}");
    const char *bound = t->source_addr ? t->source_addr(t->ctx, i) : NULL;
    if (put(out, "{\"kind\":\"tcp\",\"addr\":") ||
        (bound ? stopology_json_string(out, bound) : put_addr(out, s->host, s->port)))
        return -1;
    return put(out, s->initializer_only ? ",\"initializer_only\":true}" : "}");
}

static int put_pipeline(buf_t *out, const stopology_t *t, size_t pi)
{
    const app_t *app = t->app;
    const pipeline_t *p = &app->pipes[pi];
    if (put(out, "{\"name\":") || stopology_json_string(out, p->name) ||
        put(out, ",\"source\":") || put_source(out, t, pi) || put(out, ",\"steps\":["))
        return -1;
    for (size_t i = 0; i < p->nsteps; i++) {
        char head[64];
        snprintf(head, sizeof head, "%s{\"index\":%zu,\"name\":", i ? "," : "", i);
        if (put(out, head) || stopology_json_string(out, p->steps[i].label) ||
            put(out, ",\"kind\":\"") || put(out, step_kind_name(p->steps[i].kind)) ||
            put(out, "\"}"))
            return -1;
    }
    if (put(out, "],\"sinks\":["))
        return -1;
    for (size_t k = 0; k < p->nouts; k++) {
        const sink_addr_t *a = &app->sinks[p->outs[k].sink];
        if ((k && put(out, ",")) || put_addr(out, a->host, a->port))
            return -1;
    }
    return put(out, "]}");
}

int stopology_json(const stopology_t *t, buf_t *out)
{
    if (put(out, "{\"service\":\"stream\",\"application\":") ||
        stopology_json_string(out, t->app->name) || put(out, ",\"worker\":") ||
        stopology_json_string(out, t->worker) ||
        put(out, t->cluster ? ",\"cluster\":true" : ",\"cluster\":false") ||
        put(out, ",\"slots\":"))
        return -1;
    char slots[24];
    snprintf(slots, sizeof slots, "%u", ROUTING_SLOTS);
    if (put(out, slots) || put(out, ",\"pipelines\":["))
        return -1;
    for (size_t i = 0; i < t->app->npipes; i++)
        if ((i && put(out, ",")) || put_pipeline(out, t, i))
            return -1;
    if (put(out, "]"))
        return -1;
    if (t->members && (put(out, ",\"members\":") || t->members(t->ctx, out)))
        return -1;
    return put(out, "}\n");
}
