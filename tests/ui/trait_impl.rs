struct Greeter;

#[rodario::actor]
impl Default for Greeter {
    fn default() -> Self {
        Greeter
    }
}

fn main() {}
