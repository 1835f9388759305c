#include "util/sigreset.h"

#include <signal.h>

void sig_reset_handlers(void)
{
    for (int sig = 1; sig < NSIG; sig++) {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler != SIG_IGN &&
            sa.sa_handler != SIG_DFL)
            signal(sig, SIG_DFL);
    }
}
