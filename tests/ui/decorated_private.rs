struct Greeter;

#[rodario::actor]
impl Greeter {
    #[rodario(singular)]
    fn greet(&self) -> usize {
        0
    }
}

fn main() {}
