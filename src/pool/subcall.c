#include "pool/subcall.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

static const char WORKER_LABEL[] = "bettong pool sub-call key 1";

int subcall_worker_key(const void *secret, size_t len, uint8_t key[SUBCALL_KEY_LEN])
{
    static const uint8_t empty = 0;
    unsigned out = 0;
    if (!HMAC(EVP_sha256(), len ? secret : &empty, (int)len, (const uint8_t *)WORKER_LABEL,
              sizeof WORKER_LABEL - 1, key, &out))
        return -1;
    return out == SUBCALL_KEY_LEN ? 0 : -1;
}

int subcall_token(const uint8_t wkey[SUBCALL_KEY_LEN], uint64_t task_id,
                  uint8_t token[SUBCALL_KEY_LEN])
{
    uint8_t id[8];
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(task_id >> (56 - 8 * i));
    unsigned out = 0;
    if (!HMAC(EVP_sha256(), wkey, SUBCALL_KEY_LEN, id, sizeof id, token, &out))
        return -1;
    return out == SUBCALL_KEY_LEN ? 0 : -1;
}

int subcall_token_of_secret(const void *secret, size_t len, uint64_t task_id,
                            uint8_t token[SUBCALL_KEY_LEN])
{
    uint8_t wkey[SUBCALL_KEY_LEN];
    int rc = subcall_worker_key(secret, len, wkey);
    if (rc == 0)
        rc = subcall_token(wkey, task_id, token);
    OPENSSL_cleanse(wkey, sizeof wkey);
    return rc;
}
