//! A component for a world that is not proxlet's: it imports an interface
//! no proxlet host provides.

wit_bindgen::generate!({
    inline: "
        package test:wrong;
        interface thing { poke: func() -> u32; }
        world wrong { import thing; export run: func() -> u32; }
    ",
});

struct Wrong;

impl Guest for Wrong {
    fn run() -> u32 {
        test::wrong::thing::poke()
    }
}

export!(Wrong);
