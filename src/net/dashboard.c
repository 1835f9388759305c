#include "net/dashboard.h"

#include <string.h>

#include "net/webassets.h"

/* A file's bytes, as they were built in. */
static int asset_page(void *ctx, buf_t *out)
{
    const webasset_t *a = ctx;
    return buf_append(out, a->data, a->len);
}

int dashboard_routes(httpd_t *h)
{
    for (size_t i = 0; i < webassets_count; i++) {
        const webasset_t *a = &webassets[i];
        if (httpd_route(h, a->path, a->content_type, asset_page, (void *)a) < 0)
            return -1;
        if (strcmp(a->path, "/index.html") == 0 &&
            httpd_route(h, "/", a->content_type, asset_page, (void *)a) < 0)
            return -1;
    }
    return 0;
}

static int metrics_page(void *ctx, buf_t *out) { return metrics_render(ctx, out); }

int dashboard_serve_metrics(httpd_t *h, metrics_t *m)
{
    if (httpd_route_flags(h, "/metrics", METRICS_CONTENT_TYPE, metrics_page, m,
                          HTTPD_ANY_ORIGIN) < 0)
        return -1;
    return dashboard_routes(h);
}
