"""Test app that calls to() before new_pipeline(): WallarooError at load time."""

import wallaroo


@wallaroo.computation(name="identity")
def identity(data):
    return data


def application_setup(args):
    ab = wallaroo.ApplicationBuilder("misuse")
    ab.to(identity)
    return ab.build()
