struct Greeter;

#[rodario::actor]
impl Greeter {
    #[rodario(exclusive)]
    pub fn greet(&self) -> usize {
        0
    }
}

fn main() {}
